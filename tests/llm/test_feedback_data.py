"""Unpaired feedback data (KTO's): TRL's unpaired format read as a feedback dataset (standard and conversational),
bad lines refused with file, line and field, the kind recognised from a file's keys, its upload statistics, preference
pairs unpaired, and every example given another example's answer for the KL estimate."""

from __future__ import annotations

import json

import pytest

from llm.chat_data import DataFormatError, read_dataset
from llm.dataset_kind import looks_like
from llm.kto_batches import pad_feedback, read_feedback_items, tokenize_feedback, unpair
from llm.stats import inspect_dataset
from llm.tokenizer import get_tokenizer

STANDARD = {"prompt": "Name a colour.", "completion": "Blue.", "label": True}
CONVERSATIONAL = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                  "completion": [{"role": "assistant", "content": "Go away."}], "label": False}


def write(tmp_path, rows, name="feedback.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_trl_unpaired_lines_are_read_in_both_forms(tmp_path):
    path = write(tmp_path, [STANDARD, CONVERSATIONAL])
    assert read_dataset("feedback", path) == [
        {"prompt": [{"role": "user", "content": "Name a colour."}],
         "completion": [{"role": "assistant", "content": "Blue."}], "label": True},
        {**CONVERSATIONAL}]
    assert looks_like(path) == "feedback" and read_feedback_items(path) == read_dataset("feedback", path)
    stats = inspect_dataset("feedback", path, get_tokenizer("gpt2"))
    assert (stats["answers"], stats["good"], stats["bad"]) == (2, 1, 1) and "— bad —" in stats["preview"][1]


@pytest.mark.parametrize("row,field,words", [
    ({**STANDARD, "label": 1}, "label", "must be true (a good answer) or false"),
    ({**STANDARD, "label": "true"}, "label", "must be true"),
    ({"prompt": "Hi", "completion": "Hello"}, None, "missing label"),
    ({**STANDARD, "completion": ""}, "completion", "is empty"),
    ({**STANDARD, "prompt": [{"role": "assistant", "content": "x"}]}, "prompt", "must end with a user message"),
    ({**STANDARD, "completion": [{"role": "user", "content": "x"}]}, "completion", "assistant messages only"),
])
def test_a_bad_line_is_refused_with_its_file_line_and_field(tmp_path, row, field, words):
    path = write(tmp_path, [STANDARD, row], "thumbs.jsonl")
    with pytest.raises(DataFormatError) as caught:
        read_dataset("feedback", path)
    assert (caught.value.file, caught.value.line, caught.value.field) == ("thumbs.jsonl", 2, field)
    assert words in caught.value.problem


def test_pairs_are_unpaired_and_each_example_gets_another_answer(tmp_path):
    pairs = [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
              "chosen": [{"role": "assistant", "content": f"Good answer {i}."}],
              "rejected": [{"role": "assistant", "content": f"Bad {i}."}], "source": "upload"} for i in range(3)]
    items = unpair(pairs)
    assert [(item["label"], item["source"]) for item in items] == [(True, "upload"), (False, "upload")] * 3
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n" for p in pairs))
    assert [item["label"] for item in read_feedback_items(path)] == [True, False] * 3  # a preference file, unpaired

    tokenizer = get_tokenizer("gpt2")
    examples = tokenize_feedback(tokenizer, items, max_length=64, seed=3).examples
    again = tokenize_feedback(tokenizer, items, max_length=64, seed=3).examples
    assert [e.mismatched[0].tolist() for e in examples] == [e.mismatched[0].tolist() for e in again]  # fixed partners
    batch = pad_feedback(examples, tokenizer.eot_id)
    size = len(examples)
    assert batch["inputs"].shape[0] == 2 * size and batch["label"].tolist() == [True, False] * 3
    for row in range(size):
        own, other = batch["targets"][row], batch["targets"][size + row]
        assert not (own[own != -100].tolist() == other[other != -100].tolist())  # never its own answer
        # ...but its own prompt: the two rows agree up to where the answer starts
        start = int((own != -100).nonzero()[0])
        assert batch["inputs"][row, :start + 1].tolist() == batch["inputs"][size + row, :start + 1].tolist()
