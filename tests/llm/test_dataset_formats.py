"""Chat, preference and prompt datasets (llm/chat_data.py, llm/stats.py): every accepted format gives the
same normal form; every malformed line is refused with its file, line and field."""

from __future__ import annotations

import json

import pytest

from llm.chat_data import DataFormatError, read_dataset
from llm.stats import inspect_dataset
from llm.tokenizer import get_tokenizer

GOOD = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]}
NORMAL = GOOD["messages"]


def write_lines(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return str(path)


def refused(tmp_path, kind: str, bad_line, *, name="data.jsonl") -> DataFormatError:
    """The error for a file whose lines 1-2 are good and line 3 is `bad_line`."""
    good = GOOD if kind == "chat" else {"prompt": "Hi", "chosen": "Good", "rejected": "Bad"}
    path = write_lines(tmp_path / name, [good, "", good, bad_line] if kind != "prompts" else
                       [{"prompt": "a"}, "", {"prompt": "b"}, bad_line])
    with pytest.raises(DataFormatError) as caught:
        read_dataset(kind, path, display_name="upload.jsonl")
    error = caught.value
    assert error.file == "upload.jsonl" and error.line == 4, str(error)  # line 2 is blank, still counted
    return error


def test_the_four_chat_formats_of_one_conversation_give_the_same_normal_form(tmp_path):
    lines = [
        GOOD,
        {"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello!"}]},
        {"instruction": "Hi there", "input": "", "output": "Hello!"},
        {"prompt": "Hi there", "completion": "Hello!"},
        {"prompt": [NORMAL[0]], "completion": [NORMAL[1]]},
    ]
    assert read_dataset("chat", write_lines(tmp_path / "c.jsonl", lines)) == [NORMAL] * 5
    alpaca = {"system": "Be brief.", "instruction": "Translate", "input": "chat", "output": "Katze"}
    assert read_dataset("chat", write_lines(tmp_path / "a.jsonl", [alpaca]))[0] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "Katze"}]


@pytest.mark.parametrize("bad, field, words", [
    ("{not json", None, "not valid JSON"),
    ([1, 2], None, "expected a JSON object"),
    ({"text": "a corpus line"}, None, "no chat format recognised"),
    ({"messages": [{"role": "robot", "content": "x"}, NORMAL[1]]}, "messages[0].role", "unknown role"),
    ({"messages": [NORMAL[0], {"role": "assistant", "content": 42}]}, "messages[1].content", "must be a string"),
    ({"messages": [NORMAL[0], {"role": "assistant", "content": "  "}]}, "messages[1].content", "is empty"),
    ({"messages": [NORMAL[0]]}, "messages", "no assistant turn"),
    ({"messages": [NORMAL[0], {"role": "system", "content": "late"}, NORMAL[1]]}, "messages[1].role",
     "system message may only come first"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "conversations[0].from", "unknown speaker"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": None}]}, "conversations[1].value",
     "must be a string"),
    ({"instruction": "x", "output": ""}, "output", "is empty"),
    ({"prompt": "x", "completion": [NORMAL[0]]}, "completion", "assistant messages only"),
    ('{"n": ' + "9" * 5001 + "}", None, "not readable JSON"),
    ('{"a": ' + "[" * 200 + "]" * 200 + "}", None, "nested more than"),
])
def test_malformed_chat_lines_name_the_line_and_the_field(tmp_path, bad, field, words):
    error = refused(tmp_path, "chat", bad)
    assert error.field == field and words in error.problem, str(error)
    assert str(error).startswith("upload.jsonl, line 4")


def test_preference_formats_give_the_same_pair(tmp_path):
    user, good, bad = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Good"}, \
        {"role": "assistant", "content": "Bad"}
    lines = [
        {"prompt": "Hi", "chosen": "Good", "rejected": "Bad"},
        {"prompt": [user], "chosen": [good], "rejected": [bad]},
        {"chosen": [user, good], "rejected": [user, bad]},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Good", "rejected": "\n\nHuman: Hi\n\nAssistant: Bad"},
        {"prompt": "\n\nHuman: Hi", "chosen": "\n\nAssistant: Good", "rejected": "\n\nAssistant: Bad"},
    ]
    pairs = read_dataset("preference", write_lines(tmp_path / "p.jsonl", lines))
    assert pairs == [{"prompt": [user], "chosen": [good], "rejected": [bad]}] * 5
    with_margin = read_dataset("preference", write_lines(tmp_path / "m.jsonl", [{**lines[0], "margin": 2}]))
    assert with_margin[0]["margin"] == 2.0


@pytest.mark.parametrize("bad, field, words", [
    ({"prompt": "Hi", "chosen": "Same", "rejected": "Same"}, "rejected", "same answer"),
    ({"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
      "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}]}, "chosen",
     "share no prompt"),
    ({"chosen": "Good", "rejected": "Bad"}, "chosen", "must be conversations"),
    ({"prompt": "Hi", "chosen": ""}, None, "expected chosen and rejected"),
    ({"prompt": "Hi", "chosen": "", "rejected": "Bad"}, "chosen", "is empty"),
    ({"prompt": "Hi", "chosen": "a", "rejected": "b", "margin": "big"}, "margin", "must be a number"),
])
def test_malformed_preference_lines_name_the_line_and_the_field(tmp_path, bad, field, words):
    error = refused(tmp_path, "preference", bad)
    assert error.field == field and words in error.problem, str(error)


def test_prompts_from_text_and_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("First question?\n\n  Second one  \n")
    assert read_dataset("prompts", tmp_path / "p.txt") == [[{"role": "user", "content": "First question?"}],
                                                           [{"role": "user", "content": "Second one"}]]
    conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    path = write_lines(tmp_path / "p.jsonl", [{"prompt": "q"}, {"prompt": conversation}])
    assert read_dataset("prompts", path) == [[{"role": "user", "content": "q"}], conversation]
    error = refused(tmp_path, "prompts", {"prompt": [*conversation, {"role": "assistant", "content": "a"}]})
    assert error.field == "prompt" and "end with a user message" in error.problem


def test_wrong_extension_and_empty_files_are_refused(tmp_path):
    (tmp_path / "chat.csv").write_text("a,b\n")
    with pytest.raises(DataFormatError, match="must be .jsonl"):
        read_dataset("chat", tmp_path / "chat.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataFormatError, match="holds no chat lines"):
        read_dataset("chat", tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"x": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DataFormatError, match="line 2: the line is not valid UTF-8"):
        read_dataset("chat", tmp_path / "latin1.jsonl")


def test_inspect_counts_turns_and_tokens_per_role(tmp_path):
    gpt2 = get_tokenizer("gpt2")
    conversations = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"},
         {"role": "assistant", "content": "Hello world"}],
        [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hello world Hello world"},
         {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "world"}],
    ]
    path = write_lines(tmp_path / "c.jsonl", [{"messages": c} for c in conversations])
    stats = inspect_dataset("chat", path, gpt2, preview=1)
    # "Hello world" is 2 GPT-2 tokens, "Hello" 1, "world" 1, "Be brief." 3.
    assert stats["conversations"] == 2 and stats["items"] == 2
    assert stats["tokens_by_part"] == {"system": 3, "user": 2 + 2, "assistant": 2 + 5}
    assert stats["token_histograms"]["assistant"]["min"] == 2 and stats["token_histograms"]["assistant"]["max"] == 5
    assert stats["turns_histogram"]["min"] == 3 and stats["turns_histogram"]["max"] == 4
    assert stats["length_histogram"] == stats["token_histograms"]["assistant"]
    assert stats["preview"] == ["<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello world<|im_end|>\n"
                                "<|im_start|>assistant\nHello world<|im_end|>\n"]
    json.dumps(stats)  # stored as JSON in Dataset.stats
