"""Agreement and consensus (llm/agreement.py) against values computed by hand on small tables."""

import pytest

from llm.agreement import (LabelRow, against_majority, alpha_reading, cohen_kappa, consensus,
                                    consensus_counts, disagreements, krippendorff_alpha, pairwise_kappas,
                                    percent_agreement)


def table(**by_labeler):
    """table(ann="a a b b", bob="a b b b") -> rows, item i = the i-th label of each ("-" = not labeled)."""
    rows = []
    for labeler, labels in by_labeler.items():
        for item, label in enumerate(labels.split()):
            if label != "-":
                rows.append(LabelRow(item, labeler, label))
    return rows


def test_two_labelers_by_hand():
    rows = table(ann="a a b b", bob="a b b b")
    # Percent agreement: 3 of 4 items agree.
    assert percent_agreement(rows) == pytest.approx(0.75)
    # Cohen: p_o = 3/4; marginals ann (a .5, b .5), bob (a .25, b .75): p_e = .125 + .375 = .5;
    # kappa = (.75 - .5) / (1 - .5) = .5.
    kappa, shared = cohen_kappa(rows, "ann", "bob")
    assert shared == 4 and kappa == pytest.approx(0.5)
    # Krippendorff (nominal), coincidence matrix: o_aa = 2, o_ab = o_ba = 1, o_bb = 4; n_a = 3, n_b = 5, n = 8.
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (n_a n_b + n_b n_a) = 1 - 7 * 2 / 30 = 8/15.
    assert krippendorff_alpha(rows) == pytest.approx(8 / 15)


def test_three_labelers_with_missing_labels_by_hand():
    # Items: 0 all "a"; 1 a, a, tie; 2 b, b (carol missing); 3 only ann (no agreement information).
    rows = table(ann="a a b b", bob="a a b -", carol="a tie - -")
    # Item 0: 3/3 pairs agree; item 1: 1/3; item 2: 1/1 -> mean (1 + 1/3 + 1) / 3 = 7/9.
    assert percent_agreement(rows) == pytest.approx(7 / 9)
    # Coincidences (weights 1/(m-1)): item 0 (m=3) o_aa += 3; item 1 (m=3): a-a pair both ways (2 * .5 = 1),
    # a-tie 2 pairs each way (o_a,tie = o_tie,a = 2 * .5 = 1); item 2 (m=2): o_bb += 2.
    # o_aa = 4, o_bb = 2, o_a,tie = o_tie,a = 1 -> n_a = 5, n_b = 2, n_tie = 1, n = 8.
    # D_o ∝ o_a,tie + o_tie,a = 2; D_e ∝ sum over c != k of n_c n_k / (n - 1) = 2 (5*2 + 5*1 + 2*1) / 7 = 34/7.
    # alpha = 1 - 2 / (34/7) = 1 - 14/34 = 10/17.
    assert krippendorff_alpha(rows) == pytest.approx(10 / 17)
    majority = {row["labeler"]: row for row in against_majority(rows)}
    # carol vs. the others: item 0 agrees, item 1 (others: a, a) disagrees -> 1/2.
    assert majority["carol"]["compared"] == 2 and majority["carol"]["agreement"] == pytest.approx(0.5)
    assert majority["ann"]["agreement"] == pytest.approx(1.0)
    assert [d["item"] for d in disagreements(rows)] == [1]


def test_undefined_values_are_none_not_errors():
    assert krippendorff_alpha(table(ann="a b", bob="- -")) is None  # no item labeled twice
    assert krippendorff_alpha(table(ann="a a", bob="a a")) is None  # one category only: nothing to agree on
    kappa, shared = cohen_kappa(table(ann="a a", bob="a a"), "ann", "bob")
    assert kappa is None and shared == 2
    assert percent_agreement([]) is None
    assert "Not enough overlap" in alpha_reading(None)
    assert "reliable" in alpha_reading(0.85) and "tentative" in alpha_reading(0.7)
    with pytest.raises(ValueError, match="skip"):
        percent_agreement([LabelRow(1, "ann", "skip")])


def test_pairwise_kappas_need_enough_shared_items():
    rows = table(ann="a b a b a", bob="a b a b b", carol="a - - - -")
    kappas = pairwise_kappas(rows, min_shared=5)
    assert [(k["labeler_a"], k["labeler_b"], k["shared"]) for k in kappas] == [("ann", "bob", 5)]


def test_consensus_rule():
    rows = table(ann="a b tie a both_bad", bob="a b tie b both_bad", carol="b b - - -")
    decided = consensus(rows, min_labels=2)
    # item 0: a, a, b -> a; item 1: b x3 -> b; item 2: tie x2 -> tie (a label, not a pair);
    # item 3: a vs b -> no majority; item 4: both_bad.
    assert [decided[i].label for i in range(5)] == ["a", "b", "tie", None, "both_bad"]
    assert decided[3].reason == "no majority"
    assert consensus_counts(decided) == {"pairs": 2, "tie": 1, "both_bad": 1, "no_majority": 1, "too_few_labels": 0}
    strict = consensus(rows, min_labels=3)
    assert strict[2].reason == "too few labels" and strict[0].label == "a"


def test_one_vocabulary_from_the_screen_to_the_database():
    """llm/preference_labels.py: a choice as seen becomes the label stored un-swapped; agreement, ratings and the
    database column read the same labels (the stored values, which existing rows hold, are unchanged)."""
    from db.models import Comparison
    from llm.preference_labels import JUDGEMENTS, VOTES, WINNERS, Choice, Label
    from llm.ratings import bradley_terry

    assert [choice.label() for choice in Choice] == [Label.a, Label.b, Label.tie, Label.both_bad, Label.skip]
    assert [choice.label(swapped=True) for choice in Choice] == [Label.b, Label.a, Label.tie, Label.both_bad, Label.skip]
    assert [choice.words for choice in Choice] == ["A is better", "B is better", "tie", "both bad", "skip"]
    assert Choice.skip not in VOTES and set(WINNERS) < set(JUDGEMENTS) and Label.skip not in JUDGEMENTS
    assert Comparison.__table__.c.label.type.enums == ["a", "b", "tie", "both_bad", "skip"]
    with pytest.raises(ValueError, match="leave skips out"):
        consensus([LabelRow(1, "ann", "skip")])
    with pytest.raises(ValueError, match="not one of a, b, tie, both_bad"):
        bradley_terry([("x", "y", "skip")])
    assert consensus_counts(consensus(table(ann="a tie both_bad", bob="a tie both_bad"))) == {
        "pairs": 1, "tie": 1, "both_bad": 1, "no_majority": 0, "too_few_labels": 0}
