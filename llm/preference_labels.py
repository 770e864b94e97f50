"""What a person can say about two answers to one prompt, declared once: the labels stored and the choices shown.

    Label       a stored judgement, un-swapped: "a" (completion_a is better), "b", "tie", "both_bad", or "skip"
                (the labeler passed: no judgement). The database stores these values (db.models.Comparison).
    Choice      what a person clicks, as seen on screen: "left", "right", "tie", "both_bad", "skip".
                `Choice.label(swapped)` is the one table from what was seen to what is stored.
    VOTES       the arena's choices, FastChat's vote types (A, B, tie, both bad): every choice but skip
    JUDGEMENTS  the labels that judge (every label but skip): agreement's categories, the ratings' outcomes
    WINNERS     the labels that name a better answer ("a", "b"): the only ones that make a chosen/rejected pair

Everything that offers, checks or counts these reads them here: the database column, the REST schemas (the
allowed values on the OpenAPI page; any other value is a 422 naming the field), the labeling and arena
services, the Label and Arena tabs, agreement (llm/agreement.py) and the arena's ratings (llm/ratings.py).
"""

from __future__ import annotations

import enum


class Label(enum.StrEnum):
    a = "a"                # completion_a is better
    b = "b"                # completion_b is better
    tie = "tie"
    both_bad = "both_bad"
    skip = "skip"          # the labeler passed: counts towards nobody's overlap, never shown to them again


JUDGEMENTS = tuple(label for label in Label if label is not Label.skip)
WINNERS = (Label.a, Label.b)


class Choice(enum.StrEnum):
    left = "left"          # the answer shown on the left ("A") is better
    right = "right"        # the answer shown on the right ("B") is better
    tie = "tie"
    both_bad = "both_bad"
    skip = "skip"

    def label(self, swapped: bool = False) -> Label:
        """The label stored for this choice; `swapped`: completion_b was the one shown on the left."""
        if self is Choice.left:
            return Label.b if swapped else Label.a
        if self is Choice.right:
            return Label.a if swapped else Label.b
        return Label(self.value)

    @property
    def words(self) -> str:
        """How the choice reads to people ("A is better", "both bad")."""
        return {Choice.left: "A is better", Choice.right: "B is better"}.get(self, self.value.replace("_", " "))


VOTES = tuple(choice for choice in Choice if choice is not Choice.skip)
