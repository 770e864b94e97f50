"""How much labelers agree, and what their labels decide: pure functions over (pair, labeler, label) rows.

    percent_agreement(labels)       share of agreeing labeler pairs on the same item, averaged over items
    krippendorff_alpha(labels)      nominal alpha over every item with two or more labels (`krippendorff`)
    cohen_kappa(labels, a, b)       two labelers on the items both labeled
    against_majority(labels)        each labeler vs. the majority of the *other* labelers, item by item
    consensus(labels, min_labels)   per item: the label more than half of its labels give, or none

Labels here are the stored, un-swapped ones (`llm.preference_labels.JUDGEMENTS`: "a" = completion_a is better,
"b", "tie", "both_bad"); skips are not judgements and must be left out by the caller. How to read alpha (Krippendorff 2004): 1 is
perfect agreement, 0 is what chance gives, below 0 is systematic disagreement; >= 0.8 is reliable,
>= 0.667 allows tentative conclusions, below that the labels (or the guidelines) need work.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Hashable, Iterable

from llm.preference_labels import JUDGEMENTS, WINNERS

RELIABLE_ALPHA = 0.8
TENTATIVE_ALPHA = 0.667


@dataclass(frozen=True)
class LabelRow:
    item: Hashable      # the pair labeled
    labeler: Hashable   # who labeled it
    label: str          # one of JUDGEMENTS (alpha's reliability matrix codes them in that order)


def _by_item(labels: Iterable[LabelRow]) -> dict[Hashable, dict[Hashable, str]]:
    items: dict[Hashable, dict[Hashable, str]] = defaultdict(dict)
    for row in labels:
        if row.label not in JUDGEMENTS:
            raise ValueError(f"label {str(row.label)!r} is not one of {', '.join(JUDGEMENTS)} (leave skips out)")
        items[row.item][row.labeler] = row.label
    return items


def percent_agreement(labels: Iterable[LabelRow]) -> float | None:
    """Mean over items with 2+ labels of (agreeing labeler pairs / labeler pairs); None without such items."""
    shares = []
    for by_labeler in _by_item(labels).values():
        values = list(by_labeler.values())
        if len(values) < 2:
            continue
        pairs = list(combinations(values, 2))
        shares.append(sum(x == y for x, y in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else None


def krippendorff_alpha(labels: Iterable[LabelRow]) -> float | None:
    """Nominal Krippendorff's alpha; None when it is undefined (fewer than two labels on every item, or
    a single category used throughout: no variation to agree about)."""
    import numpy as np
    import krippendorff

    # Items with a single label carry no agreement.
    items = {item: by for item, by in _by_item(labels).items() if len(by) >= 2}
    if not items:
        return None
    used = {label for by in items.values() for label in by.values()}
    if len(used) < 2:
        return None
    labelers = sorted({labeler for by in items.values() for labeler in by}, key=str)
    item_keys = list(items)
    matrix = np.full((len(labelers), len(item_keys)), np.nan)
    row_of = {labeler: index for index, labeler in enumerate(labelers)}
    for column, item in enumerate(item_keys):
        for labeler, label in items[item].items():
            matrix[row_of[labeler], column] = JUDGEMENTS.index(label)
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal",
                                    value_domain=list(range(len(JUDGEMENTS)))))


def alpha_reading(alpha: float | None) -> str:
    """One sentence on what an alpha means, for the agreement panel."""
    if alpha is None:
        return "Not enough overlap yet: alpha needs items labeled by two or more people, with some variety."
    if alpha >= RELIABLE_ALPHA:
        return f"alpha {alpha:.2f} >= {RELIABLE_ALPHA}: the labels are reliable."
    if alpha >= TENTATIVE_ALPHA:
        return f"alpha {alpha:.2f} >= {TENTATIVE_ALPHA}: good enough for tentative conclusions."
    return (f"alpha {alpha:.2f} < {TENTATIVE_ALPHA}: labelers disagree too often; sharpen the guidelines and "
            "look at the disagreements below.")


def cohen_kappa(labels: Iterable[LabelRow], first: Hashable, second: Hashable) -> tuple[float | None, int]:
    """(kappa, items both labeled). kappa is None with no shared items, or when chance agreement is 1
    (both always gave the same single label: agreement says nothing then)."""
    shared = [(by[first], by[second]) for by in _by_item(labels).values() if first in by and second in by]
    if not shared:
        return None, 0
    observed = sum(x == y for x, y in shared) / len(shared)
    first_counts = Counter(x for x, _ in shared)
    second_counts = Counter(y for _, y in shared)
    expected = sum(first_counts[c] * second_counts[c] for c in JUDGEMENTS) / len(shared) ** 2
    if expected >= 1.0:
        return None, len(shared)
    return (observed - expected) / (1 - expected), len(shared)


def pairwise_kappas(labels: Iterable[LabelRow], min_shared: int = 5) -> list[dict]:
    """Cohen's kappa for every two labelers who labeled at least `min_shared` of the same items."""
    labels = list(labels)
    labelers = sorted({row.labeler for row in labels}, key=str)
    rows = []
    for first, second in combinations(labelers, 2):
        kappa, shared = cohen_kappa(labels, first, second)
        if shared >= min_shared:
            rows.append({"labeler_a": first, "labeler_b": second, "shared": shared, "kappa": kappa})
    return rows


def _majority(values: list[str]) -> str | None:
    """The label more than half of `values` give, or None."""
    if not values:
        return None
    label, count = Counter(values).most_common(1)[0]
    return label if count * 2 > len(values) else None


def against_majority(labels: Iterable[LabelRow]) -> list[dict]:
    """Per labeler: on items where the *other* labelers have a majority, how often this one agrees with it."""
    agreed: Counter = Counter()
    compared: Counter = Counter()
    for by_labeler in _by_item(labels).values():
        for labeler, label in by_labeler.items():
            others = _majority([value for who, value in by_labeler.items() if who != labeler])
            if others is not None:
                compared[labeler] += 1
                agreed[labeler] += label == others
    return [{"labeler": labeler, "compared": compared[labeler], "agreement": agreed[labeler] / compared[labeler]}
            for labeler in sorted(compared, key=str)]


def disagreements(labels: Iterable[LabelRow]) -> list[dict]:
    """Items whose labels are not all the same: the ones to adjudicate."""
    return [{"item": item, "labels": dict(by)} for item, by in _by_item(labels).items()
            if len(set(by.values())) > 1]


@dataclass(frozen=True)
class Consensus:
    """The decision for one item: `label` (None: no majority or too few labels) and why."""

    item: Hashable
    label: str | None
    labels: int
    reason: str  # "majority", "no majority", "too few labels"


def consensus(labels: Iterable[LabelRow], min_labels: int = 1) -> dict[Hashable, Consensus]:
    """The consensus rule: an item with at least `min_labels` labels takes the label more than half of them
    give. Only the WINNERS ("a" or "b") then make a chosen/rejected pair; "tie" and "both_bad" stay labels (a
    reward model learns nothing from them as pairs)."""
    decided = {}
    for item, by_labeler in _by_item(labels).items():
        values = list(by_labeler.values())
        if len(values) < min_labels:
            decided[item] = Consensus(item, None, len(values), "too few labels")
            continue
        label = _majority(values)
        decided[item] = Consensus(item, label, len(values), "majority" if label else "no majority")
    return decided


def consensus_counts(decided: dict[Hashable, Consensus]) -> dict[str, int]:
    """How many items ended how: pairs (a or b), tie, both_bad, no majority, too few labels."""
    counts = Counter()
    for decision in decided.values():
        if decision.label in WINNERS:
            counts["pairs"] += 1
        elif decision.label is not None:
            counts[decision.label] += 1
        else:
            counts[decision.reason.replace(" ", "_")] += 1
    keys = ("pairs", *(label.value for label in JUDGEMENTS if label not in WINNERS), "no_majority", "too_few_labels")
    return {key: counts.get(key, 0) for key in keys}
