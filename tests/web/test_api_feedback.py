"""Thumbs on chat answers over HTTP (/api/feedback): who may give them, one per person and answer (again: the same
row; the other thumb: changed; undo: gone), other people's hidden, the export in TRL's unpaired format, and the
thumbs as KTO items with their row ids (what a kto job snapshots)."""

from __future__ import annotations

import json

from db.models import AnswerFeedback, ModelKind
from tests.conftest import ADMIN, LABELER, TRAINER
from tests.support.records import add_model_row, upload

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def thumb(model_id: int, label: bool, answer: str = "Blue.") -> dict:
    return {"model_id": model_id, "messages": CONVERSATION, "answer": answer, "label": label}


def test_thumbs_are_one_per_person_and_answer_changed_and_undone(client, session, api_settings):
    model = add_model_row(session, 2, 64, kind=ModelKind.sft)
    assert client.put("/api/feedback", json=thumb(model.id, True)).status_code == 401  # no credentials

    first = client.put("/api/feedback", auth=LABELER, json=thumb(model.id, True))  # a labeler may chat, so thumb
    assert first.status_code == 201, first.text
    assert first.json() | {"id": 0} == {"id": 0, "label": True, "created": True, "changed": False}
    again = client.put("/api/feedback", auth=LABELER, json=thumb(model.id, True))  # a double click, a retry
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"] and not again.json()["changed"]
    flipped = client.put("/api/feedback", auth=LABELER, json=thumb(model.id, False))
    assert flipped.status_code == 200 and flipped.json()["changed"] and flipped.json()["label"] is False
    other_person = client.put("/api/feedback", auth=TRAINER, json=thumb(model.id, True))
    assert other_person.status_code == 201 and other_person.json()["id"] != first.json()["id"]
    session.expire_all()
    assert session.query(AnswerFeedback).count() == 2

    mine = client.get("/api/feedback", auth=LABELER).json()
    assert [(row["id"], row["label"], row["answer"]) for row in mine] == [(first.json()["id"], False, "Blue.")]
    assert mine[0]["messages"] == CONVERSATION and mine[0]["model_id"] == model.id
    assert client.get("/api/feedback?everyone=true", auth=LABELER).status_code == 403  # others' are the team's
    assert len(client.get("/api/feedback?everyone=true", auth=TRAINER).json()) == 2

    # Undo: your own only (another's is not even confirmed), once.
    assert client.delete(f"/api/feedback/{first.json()['id']}", auth=TRAINER).status_code == 404
    assert client.delete(f"/api/feedback/{first.json()['id']}", auth=LABELER).json() == {
        "id": first.json()["id"], "undone": True}
    assert client.delete(f"/api/feedback/{first.json()['id']}", auth=LABELER).status_code == 404
    assert client.get("/api/feedback", auth=LABELER).json() == []


def test_bad_thumbs_are_refused_naming_the_field(client, session, api_settings):
    model = add_model_row(session, 2, 64, kind=ModelKind.sft)
    base = add_model_row(session, 2, 64)  # a base model completes documents: no chat answer to judge
    assert client.put("/api/feedback", auth=TRAINER, json=thumb(base.id, True)).status_code == 404
    assert client.put("/api/feedback", auth=TRAINER, json=thumb(999, True)).status_code == 404
    ends_with_the_answer = {**thumb(model.id, True), "messages": [{"role": "assistant", "content": "Hi"}]}
    refused = client.put("/api/feedback", auth=TRAINER, json=ends_with_the_answer)
    assert refused.status_code == 422 and "messages" in refused.text
    refused = client.put("/api/feedback", auth=TRAINER, json={**thumb(model.id, True), "label": "yes"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "label"
    refused = client.put("/api/feedback", auth=TRAINER, json=thumb(model.id, True, answer=""))
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "answer"


def test_the_export_is_trl_unpaired_jsonl_and_the_items_kto_reads(client, session, api_settings):
    model = add_model_row(session, 2, 64, kind=ModelKind.sft)
    other = add_model_row(session, 2, 64, kind=ModelKind.sft)
    client.put("/api/feedback", auth=LABELER, json=thumb(model.id, True))
    client.put("/api/feedback", auth=TRAINER, json=thumb(model.id, False, answer="Seven."))
    client.put("/api/feedback", auth=TRAINER, json=thumb(other.id, True, answer="Red."))

    assert client.get("/api/feedback/export", auth=LABELER).status_code == 403
    export = client.get(f"/api/feedback/export?model_id={model.id}", auth=ADMIN)
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert lines == [{"prompt": CONVERSATION, "completion": [{"role": "assistant", "content": "Blue."}], "label": True},
                     {"prompt": CONVERSATION, "completion": [{"role": "assistant", "content": "Seven."}],
                      "label": False}]

    # Imported back as a feedback dataset (TRL's format as it is), with its good and bad answers counted; a bad line
    # is refused naming its line and field.
    stored = upload(client, export.text, "feedback.jsonl", name="thumbs", kind="feedback")
    assert stored.status_code == 201, stored.text
    assert (stored.json()["kind"], stored.json()["stats"]["good"], stored.json()["stats"]["bad"]) == ("feedback", 1, 1)
    refused = upload(client, export.text + '{"prompt": "Hi", "completion": "Yo", "label": "no"}\n', "bad.jsonl",
                     name="bad", kind="feedback")
    assert refused.status_code == 422 and "line 3" in refused.text and "label" in refused.text

    from web.services.feedback import feedback_items

    items = feedback_items(session, [model.id])
    assert [(item["label"], item["source"], item["model_id"]) for item in items] == [
        (True, "thumbs", model.id), (False, "thumbs", model.id)]
    assert all(len(item["feedback_ids"]) == 1 for item in items)
