"""The built-in verifiers (llm/verifiers.py) and the prompts-with-answers reader (llm/grpo_data.py): what passes,
what does not, patterns refused before they run, a pattern that runs away stopped by its time limit, and a prompts
file's missing answer named by file, line and field."""

from __future__ import annotations

import json
import time

import pytest

from llm.chat_data import DataFormatError
from llm.grpo_data import read_prompt_records
from llm.verifiers import (REGEX_TIMEOUT_S, PatternProblem, Verifier, check_pattern, last_number, length_penalty,
                           reference_problem)


@pytest.mark.parametrize("kind,answer,reference,passes", [
    ("exact", "  Paris  ", "Paris", True),
    ("exact", "Paris is", "Paris", False),
    ("exact", "New   York", "New York", True),
    ("numeric", "so the total is 1,234.", "#### 1234", True),
    ("numeric", "3 apples, then 4", "4", True),          # the last number counts
    ("numeric", "4 apples, then 3", "4", False),
    ("numeric", "about 0.3333334", "0.3333333", True),   # within the default tolerance
    ("numeric", "no number here", "4", False),
    ("numeric", "-2.5e1", "-25", True),
    ("contains", "The capital is PARIS, of course.", "paris", True),
    ("contains", "The capital is Lyon.", "paris", False),
])
def test_verifiers_that_compare_with_the_reference(kind, answer, reference, passes):
    assert Verifier(kind).score(answer, reference) == (1.0 if passes else 0.0)


def test_numeric_tolerance_is_relative_above_one():
    assert Verifier("numeric", tolerance=0.01).score("1005", "1000") == 1.0
    assert Verifier("numeric", tolerance=0.01).score("1020", "1000") == 0.0
    assert last_number("x = 12, y = -0.5") == -0.5 and last_number("none") is None


def test_regex_json_and_format_verifiers():
    assert Verifier("regex", pattern=r"\bcolou?r\b").score("a colour here") == 1.0
    assert Verifier("regex", pattern=r"\bcolou?r\b").score("colours") == 0.0
    assert Verifier("format", pattern=r"Answer: \d+\.").score("  Answer: 42.  ") == 1.0
    assert Verifier("format", pattern=r"Answer: \d+\.").score("Answer: 42. Done.") == 0.0  # the whole answer
    keys = Verifier("json", json_keys="name, age")
    assert keys.score('{"name": "Ada", "age": 36}') == 1.0
    assert keys.score('{"name": "Ada"}') == 0.0 and keys.score("[1, 2]") == 0.0 and keys.score("{nope") == 0.0
    assert Verifier("json").score("[1, 2]") == 1.0


@pytest.mark.parametrize("pattern,words", [
    ("(unclosed", "does not compile"),
    ("(a+)+b", "backtrack"),
    (r"(\w*\s?)*$", "backtrack"),
    ("((ab)*c)+", "backtrack"),
    ("x" * 501, "at most 500 characters"),
    ("", "a regular expression is needed"),
])
def test_patterns_that_could_run_away_or_do_not_compile_are_refused(pattern, words):
    with pytest.raises(PatternProblem, match=words):
        check_pattern(pattern)


def test_safe_patterns_are_kept_and_a_slow_match_is_cut_by_the_time_limit():
    for pattern in (r"(cat|dog)+", r"(a++)+b", r"(?>a+)+b", r"[A-Z][a-z ,]*\."):
        check_pattern(pattern)
    # Alternatives that overlap pass the static check; the time limit stops what they cost on a long answer.
    verifier = Verifier("regex", pattern=r"(x|x|xx)*y")
    started = time.perf_counter()
    assert verifier.score("x" * 5000) == 0.0
    assert time.perf_counter() - started < 20 * REGEX_TIMEOUT_S + 1
    assert verifier.timeouts <= 1


def test_length_penalty_counts_tokens_past_the_target():
    assert length_penalty(10, 8, 0.5) == 1.0
    assert length_penalty(5, 8, 0.5) == 0.0
    assert length_penalty(50, 0, 0.5) == 0.0  # no target: no penalty


def test_reference_problems_name_what_is_wrong():
    assert reference_problem("regex", None) is None  # a pattern verifier needs no reference
    assert "missing" in reference_problem("exact", None)
    assert "no number" in reference_problem("numeric", "four")
    assert "must be text or a number" in reference_problem("contains", ["a"])


def test_a_prompts_file_without_an_answer_is_refused_with_its_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "1 + 1?", "answer": 2}, {"messages": [{"role": "user", "content": "2 + 2?"}], "answer": "4"},
             {"prompt": "3 + 3?"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataFormatError) as caught:
        read_prompt_records(path, "numeric")
    assert (caught.value.line, caught.value.field) == (3, "answer") and "missing" in str(caught.value)
    records = read_prompt_records(path, "regex")  # no reference needed
    assert [r["answer"] for r in records] == ["2", "4", None]
    assert records[1]["prompt"] == [{"role": "user", "content": "2 + 2?"}]
    text = tmp_path / "prompts.txt"
    text.write_text("one\ntwo\n")
    assert len(read_prompt_records(text, "format")) == 2
    with pytest.raises(DataFormatError, match="no reference answers"):
        read_prompt_records(text, "exact")
