"""Edges of llm/chat_data.py and llm/stats.py that tests/llm/test_dataset_formats.py (the formats and the
common refusals) does not reach: the nesting and line-length guards, HH-RLHF variants, margins, and
inspect_dataset on preference and prompt files."""

from __future__ import annotations

import json

import pytest

import llm.chat_data as chat_data
import llm.text_files as text_files
from llm.chat_data import DataFormatError, read_dataset, read_preference, read_prompts
from llm.stats import inspect_dataset, length_histogram, token_counts
from llm.tokenizer import get_tokenizer

USER, GOOD, BAD = ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Good"},
                   {"role": "assistant", "content": "Bad"})
PAIR = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}


@pytest.fixture(scope="module")
def gpt2():
    return get_tokenizer("gpt2")


def write_lines(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return str(path)


def error_of(kind: str, path) -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        read_dataset(kind, path, display_name="mine.jsonl")
    return caught.value


def test_the_error_message_names_only_what_is_known():
    assert str(DataFormatError("a.jsonl", 3, "messages[2].content", "is empty")) == \
        "a.jsonl, line 3, field messages[2].content: is empty"
    assert str(DataFormatError("a.jsonl", 3, None, "not valid JSON")) == "a.jsonl, line 3: not valid JSON"
    assert str(DataFormatError("a.jsonl", None, None, "the file holds no chat lines")) == \
        "a.jsonl: the file holds no chat lines"
    assert isinstance(DataFormatError("a", 1, None, "x"), ValueError)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    # An escaped quote must not end the string for the nesting check: these 60 brackets are text.
    content = 'He said \\"look\\": ' + "[" * 60 + "{" * 60
    line = '{"messages": [{"role": "user", "content": "' + content + '"}, {"role": "assistant", "content": "ok"}]}'
    conversations = read_dataset("chat", write_lines(tmp_path / "code.jsonl", [line]))
    assert conversations[0][0]["content"] == json.loads(line)["messages"][0]["content"]
    # ...while real nesting after such a string is still refused, on its own line.
    deep = '{"messages": "\\"", "x": ' + "[" * 40 + "]" * 40 + "}"
    error = error_of("chat", write_lines(tmp_path / "deep.jsonl", [line, deep]))
    assert error.line == 2 and "nested more than" in error.problem


def test_deep_nesting_that_gets_past_the_check_is_still_a_line_error(tmp_path, monkeypatch):
    # With the pre-check out of the way json.loads itself hits the recursion limit: reported, not raised.
    monkeypatch.setattr(text_files, "MAX_JSON_DEPTH", 10 ** 9)  # the check lives in llm.text_files
    path = write_lines(tmp_path / "deep.jsonl", [{"prompt": "a", "completion": "b"}, "[" * 100_000 + "]" * 100_000])
    error = error_of("chat", path)
    assert error.line == 2 and error.field is None and "not readable JSON" in error.problem


def test_a_too_long_line_is_refused_by_number_and_the_limit_is_inclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(chat_data, "MAX_LINE_BYTES", 100)
    padded = {"prompt": "Hi", "completion": "x"}
    text = json.dumps(padded)
    exactly = text[:-2] + "x" * (100 - len(text)) + '"}'
    assert len(exactly.encode()) == 100
    assert len(read_dataset("chat", write_lines(tmp_path / "ok.jsonl", [exactly]))) == 1
    error = error_of("chat", write_lines(tmp_path / "long.jsonl", [text, "", exactly[:-2] + 'x"}']))
    assert error.line == 3 and "longer than" in error.problem


@pytest.mark.parametrize("line", [
    {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Good", "rejected": " Bad"},  # prompt ends with the cue
    {"prompt": "Human: Hi", "chosen": "Assistant: Good", "rejected": "Assistant: Bad"},  # no leading blank lines
    {"chosen": "Human: Hi\n\nAssistant: Good", "rejected": "Human: Hi\n\nAssistant: Bad"},
    {"prompt": "\n\nHuman: Hi", "chosen": "\n\nHuman: Hi\n\nAssistant: Good",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Bad"},  # answers repeat the prompt
])
def test_hh_rlhf_variants_give_the_same_pair(tmp_path, line):
    assert read_preference(write_lines(tmp_path / "hh.jsonl", [line])) == [PAIR]


def test_a_multi_turn_implicit_pair_keeps_the_whole_shared_prompt(tmp_path):
    history = [{"role": "system", "content": "Be kind."}, USER, {"role": "assistant", "content": "Hello."},
               {"role": "user", "content": "Help me"}]
    line = {"chosen": history + [GOOD], "rejected": history + [BAD]}
    assert read_preference(write_lines(tmp_path / "p.jsonl", [line])) == [
        {"prompt": history, "chosen": [GOOD], "rejected": [BAD]}]
    hh = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Help me\n\nAssistant: Good",
          "rejected": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Help me\n\nAssistant: Bad"}
    assert read_preference(write_lines(tmp_path / "hh.jsonl", [hh]))[0]["prompt"] == history[1:]


def test_an_implicit_pair_that_splits_after_an_assistant_turn_has_no_prompt(tmp_path):
    line = {"chosen": [USER, GOOD, {"role": "user", "content": "A"}, GOOD],
            "rejected": [USER, GOOD, {"role": "user", "content": "B"}, BAD]}
    error = error_of("preference", write_lines(tmp_path / "p.jsonl", [line]))
    assert error.line == 1 and error.field == "chosen" and "share no prompt" in error.problem


@pytest.mark.parametrize("margin, words", [
    ("NaN", "finite"), ("Infinity", "finite"), ("1e999", "finite"), ("9" * 400, "finite"), ("true", "a number"),
])
def test_a_margin_must_be_a_finite_number(tmp_path, margin, words):
    good = '{"prompt": "Hi", "chosen": "Good", "rejected": "Bad", "margin": 1}'
    bad = good.replace('"margin": 1', f'"margin": {margin}')
    error = error_of("preference", write_lines(tmp_path / "p.jsonl", [good, bad]))
    assert error.line == 2 and error.field == "margin" and words in error.problem, str(error)
    assert read_preference(write_lines(tmp_path / "ok.jsonl", [good]))[0]["margin"] == 1.0


def test_prompt_files_that_hold_nothing_or_the_wrong_thing_are_refused(tmp_path):
    (tmp_path / "blank.txt").write_text("\n   \n\n")
    with pytest.raises(DataFormatError, match="holds no prompts"):
        read_prompts(tmp_path / "blank.txt")
    (tmp_path / "p.csv").write_text("prompt\nHi\n")
    error = error_of("prompts", tmp_path / "p.csv")
    assert ".txt or .jsonl" in error.problem and error.file == "mine.jsonl"
    error = error_of("prompts", write_lines(tmp_path / "p.jsonl", [{"prompt": "a"}, {"question": "b"}]))
    assert error.line == 2 and "expected a prompt (or messages) field" in error.problem and "question" in error.problem
    ended_by_the_assistant = {"messages": [USER, GOOD], "answer": "4"}
    error = error_of("prompts", write_lines(tmp_path / "m.jsonl", [{"messages": [USER]}, ended_by_the_assistant]))
    assert (error.line, error.field) == (2, "messages") and "end with a user message" in error.problem


def test_prompts_with_reference_answers_read_in_either_prompt_form(tmp_path):
    # GSM8K-like files, as GRPO's verifiers use them: OpenAI messages or a plain prompt, each with an answer.
    system = {"role": "system", "content": "Be brief."}
    path = write_lines(tmp_path / "math.jsonl", [{"messages": [system, USER], "answer": "4"},
                                                 {"prompt": "Hi", "answer": "5", "id": 7}])
    assert read_prompts(path) == [[system, USER], [USER]]


def test_token_counts_match_encoding_each_text(gpt2):
    texts = ["Hello world", "", "Hello", "Be brief.", "world " * 50, "A fine answer."] * 7
    assert token_counts(gpt2, texts) == [len(gpt2.encode(text)) for text in texts]
    assert token_counts(gpt2, []) == []


def test_inspect_a_preference_file_counts_tokens_per_part(tmp_path, gpt2):
    # GPT-2: "Hi" 1 token, "Good" 1, "Bad" 1, "Hello world" 2, "A fine answer." 4, "Be brief." 3.
    lines = [
        {"prompt": "Hi", "chosen": "Good", "rejected": "Bad"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}],
         "chosen": "A fine answer.", "rejected": "Bad", "margin": 0.5},
    ]
    stats = inspect_dataset("preference", write_lines(tmp_path / "p.jsonl", lines), gpt2, preview=5)
    assert stats["pairs"] == 2 and stats["items"] == 2
    assert stats["tokens_by_part"] == {"prompt": 1 + 5, "chosen": 1 + 4, "rejected": 1 + 1}
    assert stats["tokens"] == 6 + 5 + 2
    assert stats["token_histograms"]["prompt"] == length_histogram([1, 5])
    assert stats["length_histogram"] == length_histogram([1, 4])  # the chosen answers
    assert "turns_histogram" not in stats
    first = stats["preview"][0]
    assert first.index("user\nHi") < first.index("chosen") < first.index("Good") < first.index("rejected") \
        < first.index("Bad")
    assert len(stats["preview"]) == 2
    json.dumps(stats)


def test_inspect_prompts_counts_turns_and_cuts_long_previews(tmp_path, gpt2):
    (tmp_path / "p.txt").write_text("Hello world\n\nHello\n" + "Hello " * 400 + "\n")
    stats = inspect_dataset("prompts", tmp_path / "p.txt", gpt2, preview=2)
    assert stats["prompts"] == 3
    assert stats["token_histograms"]["user"]["min"] == 1 and stats["token_histograms"]["user"]["max"] == 400
    assert stats["turns_histogram"]["min"] == stats["turns_histogram"]["max"] == 1
    assert len(stats["preview"]) == 2
    long_preview = inspect_dataset("prompts", tmp_path / "p.txt", gpt2)["preview"][2]
    assert len(long_preview) == 1000 and long_preview.endswith("…")
