"""The arena's board (issue 19 item 19): battles won, tied and lost per model and the win-rate matrix, from the votes
(llm/ratings.py) through the service (named as the viewer may be told) to the tab; "Next battle" after a vote; why
two equal ratings can have intervals of different widths, said on the page. The browser checks are in
tests/e2e/test_ui_first_day_e2e.py."""

from __future__ import annotations

import gradio as gr
import pytest

from db.models import Comparison, Completion, Model, ModelKind, Prompt
from llm.ratings import head_to_head, leaderboard, records
from web.services.arena import battle_table
from web.ui.arena_tab import INTERVALS_EXPLAINED, build, leaderboard_html, win_rate_matrix_html


VOTES = [("x", "y", "a")] * 3 + [("y", "x", "a"), ("x", "y", "tie"), ("x", "z", "both_bad")]


def test_records_and_head_to_head_from_the_votes():
    assert records(VOTES) == {"x": {"battles": 6, "won": 3, "tied": 2, "lost": 1},
                              "y": {"battles": 5, "won": 1, "tied": 1, "lost": 3},
                              "z": {"battles": 1, "won": 0, "tied": 1, "lost": 0}}
    met = head_to_head(VOTES)
    assert met["x", "y"] == {"battles": 5, "score": 3.5} and met["y", "x"] == {"battles": 5, "score": 1.5}
    assert met["x", "z"] == met["z", "x"] == {"battles": 1, "score": 0.5} and ("y", "z") not in met


def test_equal_ratings_with_fewer_battles_have_wider_intervals():
    """What the page's sentence says, on votes: a and b both even against c, a in 40 battles, b in 4."""
    votes = [("a", "c", outcome) for outcome in ("a", "b") * 20] + [("b", "c", outcome) for outcome in ("a", "b") * 2]
    rows = {row["model"]: row for row in leaderboard(votes, rounds=200, seed=1)}
    assert rows["a"]["rating"] == pytest.approx(rows["b"]["rating"], abs=1e-6)
    assert rows["b"]["upper"] - rows["b"]["lower"] > 1.5 * (rows["a"]["upper"] - rows["a"]["lower"])
    assert "fewer battles" in INTERVALS_EXPLAINED


def add_votes(session, users, outcomes: list[tuple[Model, Model, str]]) -> None:
    prompt = Prompt(text="arena question")
    session.add(prompt)
    session.flush()
    for left, right, label in outcomes:
        answers = [Completion(prompt_id=prompt.id, model_id=model.id, text="answer", sampling={})
                   for model in (left, right)]
        session.add_all(answers)
        session.flush()
        session.add(Comparison(prompt_id=prompt.id, completion_a_id=answers[0].id, completion_b_id=answers[1].id,
                               label=label, annotator_id=users["trainer"].id, source="arena"))
    session.commit()


@pytest.fixture
def three_models(session, users):
    models = [Model(name=name, kind=ModelKind.sft, tokenizer="gpt2", config={}, path=f"models/{name}")
              for name in ("sft-a", "sft-b", "sft-c")]
    session.add_all(models)
    session.commit()
    a, b, c = models
    add_votes(session, users, [(a, b, "a"), (a, b, "a"), (b, a, "tie"), (a, c, "b")])
    return models


def test_the_battle_table_in_leaderboard_order_named_as_the_viewer_may_be_told(session, users, three_models):
    a, b, c = three_models
    table = battle_table(session, viewer=users["trainer"])
    names = [model["name"] for model in table["models"]]
    assert sorted(names) == ["sft-a", "sft-b", "sft-c"]
    row = {model["name"]: model for model in table["models"]}
    assert {key: row["sft-a"][key] for key in ("battles", "won", "tied", "lost")} == {
        "battles": 4, "won": 2, "tied": 1, "lost": 1}
    at = {name: index for index, name in enumerate(names)}
    assert table["win_rates"][at["sft-a"]][at["sft-b"]] == {"battles": 3, "win_rate": pytest.approx(2.5 / 3)}
    assert table["win_rates"][at["sft-b"]][at["sft-c"]] is None
    assert table["win_rates"][at["sft-a"]][at["sft-a"]] is None
    blind = battle_table(session, viewer=users["labeler"])  # blind labelers (on by default): no names
    assert not {"sft-a", "sft-b", "sft-c"} & {model["name"] for model in blind["models"]}


def test_the_board_shows_records_the_matrix_and_why_intervals_differ(session, users, three_models):
    from web.services.arena import leaderboard as rated

    rows, table = rated(session, viewer=users["trainer"]), battle_table(session, viewer=users["trainer"])
    board = leaderboard_html(rows, table)
    assert "<th>battles</th><th>won · tied · lost</th>" in board and "<td>2 · 1 · 1</td>" in board
    assert INTERVALS_EXPLAINED.split(":")[0] in board and 'class="wb-win-rates"' in board
    assert '83% <span style="opacity:.6;font-size:11px">(3)</span>' in board  # sft-a against sft-b: 2.5 of 3
    assert win_rate_matrix_html({"models": table["models"][:1], "win_rates": [[None]]}) == ""


def test_next_battle_is_offered_after_a_vote_and_clears_the_screen(api_settings, users):
    with gr.Blocks() as blocks:
        build(api_settings)
    found = {fn.fn.__name__: fn.fn for fn in blocks.fns.values() if fn.fn is not None}
    assert found["voted"](None).interactive is True  # the vote cleared the battle
    assert found["voted"]({"battle_id": 3, "started": 0}).interactive is False  # a vote refused: still to vote
    left, right, state, status, message, next_battle, *votes = found["new_battle"]()
    assert (left, right, state, message) == ([], [], None, "") and "next message" in status
    assert next_battle.interactive is False and not any(vote.interactive for vote in votes)
    labelled = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == "arena-input")
    assert labelled.label == "Your message to both models" and labelled.show_label is not False
