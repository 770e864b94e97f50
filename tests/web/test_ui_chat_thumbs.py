"""The Chat tab's 👍 / 👎 (web/ui/chat_tab.py `thumb_answer`, what the Chatbot's like event calls): a thumb is stored
with the model that wrote that answer and the conversation it answered, changed by the other thumb, taken back by
clicking it again; a warning or an unknown answer takes none, and nobody logged in gives none."""

from __future__ import annotations

import gradio as gr

from db.models import AnswerFeedback
from tests.conftest import LABELER
from tests.support.records import add_chat_model
from web.ui.chat_tab import build, thumb_answer

HISTORY = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
           {"role": "user", "content": "Another?"}, {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}]


def test_thumbs_from_the_chat_tab(api_settings, users, session):
    with gr.Blocks():
        build(api_settings)  # the tab builds with thumbs on its chatbot
    first, second = add_chat_model(session, api_settings, "chat-a", 1), add_chat_model(session, api_settings, "chat-b", 2)
    labeler = {"id": users["labeler"].id, "name": LABELER[0]}
    models = {1: first.id, 3: second.id}  # the model was switched between the two answers

    assert "saved" in thumb_answer(api_settings, HISTORY, models, 3, True, labeler)
    assert "saved" in thumb_answer(api_settings, HISTORY, models, 1, False, labeler)
    session.expire_all()
    rows = {row.answer: row for row in session.query(AnswerFeedback)}
    assert rows["Red."].model_id == second.id and rows["Red."].label is True
    assert rows["Red."].messages == HISTORY[:2] + [HISTORY[2]]  # the conversation it answered, as text
    assert rows["Blue."].model_id == first.id and rows["Blue."].label is False

    thumb_answer(api_settings, HISTORY, models, 3, False, labeler)  # the other thumb: changed, not a second row
    assert "taken back" in thumb_answer(api_settings, HISTORY, models, 1, "", labeler)  # clicked again
    session.expire_all()
    assert [(row.answer, row.label) for row in session.query(AnswerFeedback)] == [("Red.", False)]

    assert "Thumbs go on" in thumb_answer(api_settings, HISTORY, models, 0, True, labeler)  # a question
    assert "Thumbs go on" in thumb_answer(api_settings, HISTORY, {}, 1, True, labeler)  # a warning
    assert "log in" in thumb_answer(api_settings, HISTORY, models, 1, True, None)
    session.expire_all()
    assert session.query(AnswerFeedback).count() == 1
