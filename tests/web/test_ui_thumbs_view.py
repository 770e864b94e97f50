"""Label ▸ Chat thumbs without a browser (web/ui/thumbs_view.py): everyone's 👍 / 👎 counted per model for the
training team, exported in TRL's unpaired format (all models or one) that the feedback reader takes back; a
labeler is refused both, and the sub-tab is shown only to the training team."""

from __future__ import annotations

import gradio as gr

from llm.chat_data import read_feedback
from tests.conftest import LABELER, TRAINER
from tests.support.records import add_chat_model
from web.services import feedback
from web.ui.label_tab import LabelTab, build
from web.ui.thumbs_view import ALL, COLUMNS

QUESTION = [{"role": "user", "content": "Name a colour."}]


class FakeRequest:
    def __init__(self, username):
        self.username = username


def test_thumbs_are_counted_per_model_and_exported_for_the_training_team(api_settings, users, session, tmp_path):
    with gr.Blocks():
        tab: LabelTab = build(api_settings)
    view = tab.thumbs
    first, second = add_chat_model(session, api_settings, "chat-a", 1), add_chat_model(session, api_settings, "chat-b", 2)
    table, picker, message = view.refresh(FakeRequest(TRAINER[0]))
    assert table.empty and "No thumbs yet" in message

    for user, answer, label in [(users["labeler"], "Blue.", True), (users["trainer"], "Blue.", True),
                                (users["labeler"], "Square.", False)]:
        feedback.give_feedback(session, user, first.id, QUESTION, answer, label)
    feedback.give_feedback(session, users["labeler"], second.id, QUESTION, "Red.", True)

    table, picker, message = view.refresh(FakeRequest(TRAINER[0]))
    assert list(table.columns) == COLUMNS
    assert table.values.tolist()[0][:4] == ["chat-a", 2, 1, 2] and table.values.tolist()[1][:4] == ["chat-b", 1, 0, 1]
    assert "4 thumbs on 2 models" in message
    assert [value for _, value in picker.choices] == [ALL, first.id, second.id]

    file, message = view.export(ALL, FakeRequest(TRAINER[0]))
    items = read_feedback(file.value["path"])
    assert len(items) == 4 and sorted(item["label"] for item in items) == [False, True, True, True]
    assert "4 thumbs in chat-thumbs.jsonl" in message
    file, message = view.export(second.id, FakeRequest(TRAINER[0]))
    assert [item["completion"][0]["content"] for item in read_feedback(file.value["path"])] == ["Red."]
    assert file.value["path"].endswith(f"chat-thumbs-model-{second.id}.jsonl")

    # Labelers give thumbs but see nobody's counts and export nothing; the sub-tab is hidden from them.
    table, _, message = view.refresh(FakeRequest(LABELER[0]))
    assert table.empty and "needs the admin or trainer role" in message
    file, message = view.export(ALL, FakeRequest(LABELER[0]))
    assert file.visible is False and "needs the admin or trainer role" in message
    assert tab.training_team_shown(FakeRequest(LABELER[0])).visible is False
    assert tab.training_team_shown(FakeRequest(TRAINER[0])).visible is True
