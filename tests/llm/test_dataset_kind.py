"""Which kind a dataset file looks like (llm.dataset_kind): each kind's formats are recognised from their first
lines, a file that mixes kinds or that no format explains is not guessed, and the hint names the kind (and the
extension) to upload it as, only when it differs from the kind chosen."""

from __future__ import annotations

import json

import pytest

from llm.dataset_kind import SAMPLE_LINES, kind_hint, looks_like


def jsonl(path, *records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}


@pytest.mark.parametrize("record, kind", [
    (CHAT, "chat"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}, "chat"),
    ({"instruction": "Add 2 and 3.", "output": "5"}, "chat"),
    ({"prompt": "Hi", "completion": "Hello."}, "chat"),
    ({"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away."}, "preference"),
    ({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi\n\nAssistant: No."}, "preference"),
    ({"prompt": "Write a poem."}, "prompts"),
    ({"prompt": "2 + 2?", "answer": "4"}, "prompts"),  # GRPO's prompts with reference answers
    ({"messages": [{"role": "user", "content": "2 + 2?"}], "answer": "4"}, "prompts"),
    ({"question": "2 + 3?", "choices": ["5", "6"], "answer": 0}, "benchmark"),
    ({"text": "Once upon a time."}, "text"),
    ({"title": "no kind has this"}, None),
])
def test_each_kind_is_recognised_by_its_keys(tmp_path, record, kind):
    assert looks_like(jsonl(tmp_path / "data.jsonl", record, record)) == kind


def test_plain_text_mixed_kinds_and_other_formats_are_not_guessed_wrong(tmp_path):
    stories = tmp_path / "stories.txt"
    stories.write_text("Once upon a time.\n\nThe end.\n", encoding="utf-8")
    assert looks_like(stories) == "text"
    assert looks_like(jsonl(tmp_path / "mixed.jsonl", CHAT, {"text": "a document"})) is None
    half = tmp_path / "half.jsonl"
    half.write_text(json.dumps(CHAT) + "\nnot json at all\n", encoding="utf-8")
    assert looks_like(half) is None
    assert looks_like(jsonl(tmp_path / "numbers.jsonl", 1, 2)) is None
    (tmp_path / "table.csv").write_text("messages\nhello\n", encoding="utf-8")
    assert looks_like(tmp_path / "table.csv") is None  # csv is text's format only
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00h\x00i")
    assert looks_like(tmp_path / "binary.jsonl") is None
    # Only the first lines are read: a chat file is a chat file whatever comes after them.
    long_chat = jsonl(tmp_path / "long.jsonl", *[CHAT] * SAMPLE_LINES, {"text": "late"})
    assert looks_like(long_chat) == "chat"


def test_the_hint_names_the_kind_to_choose_only_when_it_is_another(tmp_path):
    chats = jsonl(tmp_path / "chats.jsonl", CHAT, CHAT)
    assert kind_hint(chats, "text") == ("this looks like a chat dataset (conversations): upload it as kind chat")
    assert kind_hint(chats, "chat") == ""
    pairs = jsonl(tmp_path / "pairs.jsonl", {"prompt": "Hi", "chosen": "Hello.", "rejected": "No."})
    assert kind_hint(pairs, "chat").endswith("upload it as kind preference")
    documents = jsonl(tmp_path / "documents.jsonl", {"text": "a document"})
    assert kind_hint(documents, "chat") == ('this looks like a text dataset (documents in a "text" field): upload it '
                                            'as kind text')
    # Plain text: text or prompts (both read a .txt); as JSON lines it is neither.
    stories = tmp_path / "stories.txt"
    stories.write_text("Once upon a time.\n", encoding="utf-8")
    assert kind_hint(stories, "chat").startswith("this looks like plain text: upload it as kind text")
    assert kind_hint(stories, "text") == kind_hint(stories, "prompts") == ""
    plain_jsonl = tmp_path / "stories.jsonl"
    plain_jsonl.write_text("Once upon a time.\n", encoding="utf-8")
    assert kind_hint(plain_jsonl, "text") == "this looks like plain text, not JSON lines: save it as .txt"
    # Chat lines in a .txt: the chat kind reads .jsonl only, so the hint says to rename it too.
    chat_txt = tmp_path / "chats.txt"
    chat_txt.write_text(json.dumps(CHAT) + "\n", encoding="utf-8")
    assert kind_hint(chat_txt, "text") == ("this looks like a chat dataset (conversations): save it as .jsonl and "
                                           "upload it as kind chat")
