"""The Arena tab's handlers without a browser: a battle streams two anonymous answers, the vote reveals the
names and updates the leaderboard; the leaderboard renders its intervals."""

from __future__ import annotations

import gradio as gr
import pytest

from db.models import Model
from tests.conftest import LABELER, TRAINER
from tests.support.records import add_chat_model
from web.ui.arena_tab import build, leaderboard_figure, leaderboard_html


class FakeRequest:
    def __init__(self, username):
        self.username = username


def handlers(blocks: gr.Blocks) -> dict:
    return {fn.fn.__name__: fn.fn for fn in blocks.fns.values() if fn.fn is not None}


def test_leaderboard_rendering():
    assert "No votes yet" in leaderboard_html([])
    rows = [{"name": "dpo-1", "kind": "dpo", "rating": 1050.2, "lower": 1010.0, "upper": 1090.0, "votes": 12},
            {"name": "sft-1", "kind": "sft", "rating": 949.8, "lower": 910.0, "upper": 990.0, "votes": 12}]
    table = leaderboard_html(rows)
    assert table.index("dpo-1") < table.index("sft-1") and "1010 – 1090" in table
    figure = leaderboard_figure(rows)
    assert [tick.get_text() for tick in figure.axes[0].get_yticklabels()] == ["sft-1", "dpo-1"]


@pytest.mark.parametrize("who", [TRAINER[0], LABELER[0]])
def test_a_battle_and_a_vote(api_settings, users, session, who):
    """The names are told after the vote, to the training team; a labeler (blind labelers is on by default) is
    told none, then or on the leaderboard."""
    first = add_chat_model(session, api_settings, "chat-a", 1)
    second = add_chat_model(session, api_settings, "chat-b", 2)
    with gr.Blocks() as blocks:
        build(api_settings)
    found = handlers(blocks)
    request = FakeRequest(who)
    updates = list(found["run_battle"]("Name a colour.", request))
    left, right, state, status = updates[-1][:4]
    assert state and state["battle_id"]
    assert "Which answer is better?" in status
    assert left[0]["content"] == "Name a colour." and "chat-" not in str(updates)  # anonymous until the vote
    cast = next(fn for name, fn in found.items() if name == "cast")
    state_after, message, board, _figure, *buttons = cast(state, request)
    assert state_after is None
    if who == TRAINER[0]:
        assert "Model A was chat-" in message and "chat-a" in board and "chat-b" in board
    else:
        assert "not told which models answered" in message and "chat-" not in message + board
        assert f"model #{first.id}" in board and f"model #{second.id}" in board
    assert "Start a battle first" in cast(None, request)[1]


def test_the_pool_editor_is_shown_to_trainers_only_and_saves(api_settings, users, session):
    from tests.conftest import TRAINER

    first, second = (add_chat_model(session, api_settings, "chat-a", 1, users["trainer"]),
                     add_chat_model(session, api_settings, "chat-b", 2, users["trainer"]))
    with gr.Blocks() as blocks:
        tab = build(api_settings)
    box, pool = tab.refresh_pool(FakeRequest(LABELER[0]))
    assert box.visible is False and pool.choices == []
    box, pool = tab.refresh_pool(FakeRequest(TRAINER[0]))
    assert box.visible is True and pool.value == [first.id, second.id]
    assert [label for label, _ in pool.choices] == [f"chat-a (sft #{first.id})", f"chat-b (sft #{second.id})"]

    save = handlers(blocks)["save"]
    saved, message = save([second.id], FakeRequest(TRAINER[0]))
    assert saved.value == [second.id] and "1 of 2 chat models" in message
    _, refused = save([first.id], FakeRequest(LABELER[0]))
    assert "which cannot put their own chat models in the arena or take them out" in refused
    session.expire_all()
    assert [m.in_arena for m in session.query(Model).order_by(Model.id)] == [False, True]


def test_the_chat_tab_names_no_model_to_a_labeler(api_settings, users, session):
    """Blind labelers (on by default): Chat offers a labeler the chat models as `model #<id>`, its info line
    names none either; the training team sees the names."""
    from web.ui import chat_tab

    with gr.Blocks():
        tab = chat_tab.build(api_settings)
    chat = add_chat_model(session, api_settings, "chatty", 1)
    dropdown, info = tab.refresh_models(chat.id, FakeRequest(LABELER[0]))
    assert [value for _, value in dropdown.choices] == [chat.id]
    assert "chatty" not in str(dropdown.choices) + info and f"model #{chat.id}" in dropdown.choices[0][0]
    dropdown, info = tab.refresh_models(chat.id, FakeRequest(TRAINER[0]))
    assert "chatty" in dropdown.choices[0][0] and "chatty" in info
