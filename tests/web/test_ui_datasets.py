"""The Datasets tab's handlers without a browser: the empty state, an upload stored and the same file
again (named as the existing dataset, which is selected), rename, and a delete whose confirmation names
what uses the dataset."""

from __future__ import annotations

import gradio as gr
import pytest
from sqlalchemy import func, select

from db.models import Dataset, Job, JobStatus
from tests.conftest import TRAINER
from web.ui.datasets_tab import DatasetsTab, EMPTY_NOTE, build, delete_confirmation

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class FakeRequest:
    def __init__(self, username):
        self.username = username


def built(settings) -> tuple[DatasetsTab, dict]:
    with gr.Blocks() as blocks:
        tab = build(settings)
    return tab, {fn.fn.__name__: fn.fn for fn in blocks.fns.values() if fn.fn is not None}


def value_of(update):
    return update.value if hasattr(update, "value") else update


@SQLITE
def test_no_datasets_shows_a_note_instead_of_an_empty_table(api_settings, users):
    tab, _ = built(api_settings)
    table, note, picker, *_ = tab.first_paint()
    assert EMPTY_NOTE in note and table.visible is False and picker.choices == []


@SQLITE
def test_the_same_file_twice_names_the_existing_dataset_and_selects_it(api_settings, users, session, tmp_path):
    tab, handlers = built(api_settings)
    corpus = tmp_path / "stories.txt"
    corpus.write_text("once upon a time\n\nthe end")
    request = FakeRequest(TRAINER[0])
    first = handlers["do_upload"](str(corpus), "stories", "text", request)
    assert "Stored dataset #" in first[0]
    dataset_id = session.scalar(select(Dataset.id))
    second = handlers["do_upload"](str(corpus), "again", "text", request)
    assert f"already dataset #{dataset_id} “stories”" in second[0]
    table, note, picker = second[4:7]
    assert picker.value == dataset_id and table.visible is True and note == ""
    assert session.scalar(select(func.count()).select_from(Dataset)) == 1


@SQLITE
def test_rename_and_a_delete_confirmation_that_names_what_uses_it(api_settings, users, session, tmp_path):
    tab, handlers = built(api_settings)
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\n\ntwo")
    request = FakeRequest(TRAINER[0])
    handlers["do_upload"](str(corpus), "", "text", request)
    dataset_id = session.scalar(select(Dataset.id))
    renamed = handlers["do_rename"](dataset_id, "renamed corpus", request)
    assert "is now called “renamed corpus”" in renamed[0]

    job = Job(kind="pretrain", status=JobStatus.running, params={}, dataset_id=dataset_id)
    session.add(job)
    session.commit()
    box, text, confirm, _ = handlers["ask_delete"](dataset_id)
    assert box.visible is True and confirm.interactive is False and f"job #{job.id} (pretrain, running)" in text

    job.status = JobStatus.succeeded
    session.commit()
    box, text, confirm, _ = handlers["ask_delete"](dataset_id)
    assert confirm.interactive is True and f"job #{job.id} (pretrain, succeeded) keeps its record" in text
    hidden, message, table, note, picker = handlers["do_delete"](dataset_id, request)
    assert f"Dataset #{dataset_id} deleted." in message and EMPTY_NOTE in note and table.visible is False
    session.expire_all()
    assert session.get(Dataset, dataset_id) is None


def test_delete_confirmation_wording():
    dataset = {"id": 4, "name": "web"}
    text, possible = delete_confirmation(dataset, [], [])
    assert possible and "Nothing uses it" in text
    text, possible = delete_confirmation(dataset, ["job #3 (pretrain, queued)"], [])
    assert not possible and "job #3 (pretrain, queued)" in text


@SQLITE
def test_every_dataset_kind_is_offered_and_explained(api_settings):
    """The Kind dropdown and the introduction list DatasetKind itself: a new kind shows with no edit to the tab."""
    from db.models import DATASET_KIND_HELP, DatasetKind

    with gr.Blocks() as blocks:
        build(api_settings)
    dropdown = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == "ds-kind")
    assert [value for _, value in dropdown.choices] == [kind.value for kind in DatasetKind]
    intro = next(block for block in blocks.blocks.values() if isinstance(block, gr.Markdown)
                 and "Upload a dataset" in (block.value or ""))
    assert set(DATASET_KIND_HELP) == set(DatasetKind)  # each kind says what it is for and which files it takes
    for kind, (purpose, files) in DATASET_KIND_HELP.items():
        assert f"**{kind.value}** ({purpose}): {files}." in intro.value


@SQLITE
def test_a_file_uploaded_as_the_wrong_kind_is_told_which_kind_it_looks_like(api_settings, users, session, tmp_path):
    """Issue 19 item 13: a chat file uploaded as kind text was refused for a missing "text" field and no more."""
    import json

    _, handlers = built(api_settings)
    request = FakeRequest(TRAINER[0])
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps(chat) + "\n" + json.dumps(chat) + "\n")
    said = handlers["do_upload"](str(chats), "", "text", request)[0]
    assert ("Not stored: chats.jsonl, line 1: no &#x27;text&#x27; field (fields: messages) — this looks like a chat "
            "dataset (conversations): upload it as kind chat") in said
    stories = tmp_path / "stories.txt"
    stories.write_text("Once upon a time.\n\nThe end.\n")
    said = handlers["do_upload"](str(stories), "", "chat", request)[0]
    assert "stories.txt" in said and "this looks like plain text: upload it as kind text" in said
    assert session.scalar(select(func.count()).select_from(Dataset)) == 0

    # Chat lines in a .txt are valid text: stored as asked, with the same hint beside.
    chats_txt = tmp_path / "chats.txt"
    chats_txt.write_text(json.dumps(chat) + "\n\n" + json.dumps(chat) + "\n")
    said = handlers["do_upload"](str(chats_txt), "", "text", request)[0]
    assert "Stored dataset #" in said and "wb-msg-warn" in said
    assert ("Stored as text, but this looks like a chat dataset (conversations): save it as .jsonl and upload it "
            "as kind chat.") in said
    assert "wb-msg-warn" not in handlers["do_upload"](str(stories), "", "text", request)[0]
