"""Verifiable rewards: built-in checks of an answer against a prompt's reference answer, each scoring 0 or 1, and
the length penalty. No user code runs: a person picks a verifier and, for two of them, a regular expression.

    Verifier(kind, pattern=..., tolerance=..., json_keys=...).score(answer, reference) -> 0.0 or 1.0
    check_pattern(pattern)                         -> the compiled pattern, or PatternProblem (why it is refused)
    length_penalty(tokens, target, per_token)      -> the reward taken off an answer of `tokens` tokens
    needs_reference(kind)                          -> whether every prompt must carry an `answer`

The verifiers (llm.grpo_config.VERIFIERS):
  exact     the answer equals the reference, surrounding spaces aside and runs of spaces as one
  numeric   the last number in the answer equals the last number in the reference within tolerance
            (|a - r| <= tolerance x max(1, |r|)); thousands separators ("1,234") are read as one number
  regex     the pattern is found somewhere in the answer
  contains  the reference appears in the answer (letter case aside)
  json      the whole answer is valid JSON; with required keys, an object that has every one of them
  format    the pattern matches the whole answer (surrounding spaces aside)

Regular expressions run on the `regex` engine with a time limit per answer (`REGEX_TIMEOUT_S`; an answer whose
check runs out scores 0 and is counted), and a pattern is refused before any run when it does not compile, is
longer than MAX_PATTERN_LENGTH, or nests one unbounded quantifier inside another (`(a+)+`, `(\\w*)*`: the shape
of catastrophic backtracking). Imports no torch: the job layer checks patterns at submit.
"""

from __future__ import annotations

import json
import math
import re
import re._constants as sre_constants  # Python's own regex parser: the static check reads its tree
import re._parser as sre_parse
from dataclasses import dataclass, field

import regex  # the PyPI `regex` engine: the same syntax, and a `timeout=` on every match

from llm.grpo_config import VERIFIERS

REGEX_TIMEOUT_S = 0.05  # per answer: a well-behaved pattern checks a 4k-character answer in microseconds
MAX_PATTERN_LENGTH = 500
# The last number of a text: sign, digits with optional thousands separators, decimals, exponent.
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
# Verifiers that compare with the prompt's reference answer, so every prompt must have one.
NEEDS_REFERENCE = ("exact", "numeric", "contains")
NEEDS_PATTERN = ("regex", "format")


class PatternProblem(ValueError):
    """Why a regular expression is refused, in words a form can show."""


def needs_reference(kind: str) -> bool:
    return kind in NEEDS_REFERENCE


def _children(value) -> list:
    """The sub-patterns inside one node's argument (groups, branches, lookarounds, conditionals)."""
    if isinstance(value, sre_parse.SubPattern):
        return [value]
    if isinstance(value, (tuple, list)):
        return [child for item in value for child in _children(item)]
    return []


def _unbounded(node) -> bool:
    op, value = node
    return op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and value[1] > 1


def _nested_repeat(pattern, inside_repeat: bool = False) -> bool:
    """Whether a repeat (more than once) holds another repeat: the shape whose backtracking can grow exponentially
    with the answer's length. Possessive repeats and atomic groups never backtrack into themselves: skipped."""
    for node in pattern:
        op, value = node
        if op in (sre_constants.POSSESSIVE_REPEAT, sre_constants.ATOMIC_GROUP):
            continue
        repeating = _unbounded(node)
        if repeating and inside_repeat:
            return True
        for child in _children(value):
            if _nested_repeat(child, inside_repeat or repeating):
                return True
    return False


def check_pattern(pattern: str, field_name: str = "pattern") -> "regex.Pattern":
    """The pattern compiled for `regex`, or PatternProblem saying why it is refused."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternProblem(f"{field_name}: a regular expression is needed")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternProblem(f"{field_name}: at most {MAX_PATTERN_LENGTH} characters, got {len(pattern)}")
    try:
        parsed = sre_parse.parse(pattern)
        compiled = regex.compile(pattern)
    except (re.error, regex.error, RecursionError, OverflowError) as error:
        raise PatternProblem(f"{field_name}: does not compile ({error})") from None
    if _nested_repeat(parsed):
        raise PatternProblem(f"{field_name}: a repeated group holds another repeat (such as (a+)+), which can "
                             "backtrack for ever on some answers; rewrite it without the nesting (or make the inner "
                             "repeat possessive, a++)")
    return compiled


def last_number(text: str) -> float | None:
    """The last number written in `text`, or None."""
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        value = float(found[-1].replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _normalized(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Verifier:
    """One built-in check; `score` gives 1.0 when the answer passes, else 0.0. `timeouts` counts the answers whose
    regular expression ran out of time (scored 0)."""

    kind: str
    pattern: str | None = None
    tolerance: float = 1e-6
    json_keys: str | None = None
    timeouts: int = 0
    _compiled: object = field(default=None, repr=False)
    _keys: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self):
        if self.kind not in VERIFIERS:
            raise ValueError(f"verifier: must be one of {', '.join(VERIFIERS)}; got {self.kind!r}")
        if self.kind in NEEDS_PATTERN:
            self._compiled = check_pattern(self.pattern or "")
        self._keys = tuple(key.strip() for key in (self.json_keys or "").split(",") if key.strip())

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def _match(self, text: str, whole: bool) -> bool:
        try:
            found = (self._compiled.fullmatch if whole else self._compiled.search)(text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            self.timeouts += 1
            return False
        return found is not None

    def score(self, answer: str, reference: str | None = None) -> float:
        kind = self.kind
        if kind == "none":
            return 0.0
        if kind in NEEDS_REFERENCE and reference is None:
            raise ValueError(f"the {kind} verifier needs the prompt's reference answer")
        if kind == "exact":
            passed = _normalized(answer) == _normalized(reference)
        elif kind == "numeric":
            got, wanted = last_number(answer), last_number(reference)
            passed = got is not None and wanted is not None and abs(got - wanted) <= self.tolerance * max(1.0, abs(wanted))
        elif kind == "contains":
            passed = _normalized(reference).casefold() in _normalized(answer).casefold()
        elif kind == "regex":
            passed = self._match(answer, whole=False)
        elif kind == "format":
            passed = self._match(answer.strip(), whole=True)
        else:  # json
            try:
                value = json.loads(answer)
            except (ValueError, RecursionError):
                return 0.0
            passed = not self._keys or (isinstance(value, dict) and all(key in value for key in self._keys))
        return 1.0 if passed else 0.0


def length_penalty(tokens: int, target: int, per_token: float) -> float:
    """What an answer of `tokens` tokens loses: `per_token` for each token past `target` (0 = no target)."""
    if target <= 0 or per_token <= 0:
        return 0.0
    return per_token * max(0, tokens - target)


def reference_problem(kind: str, reference) -> str | None:
    """Why a prompt's `answer` cannot serve the verifier `kind` (None when it can): the submit check's words."""
    if not needs_reference(kind):
        return None
    if reference is None:
        return f"missing: the {kind} verifier compares each answer with the prompt's reference answer"
    if not isinstance(reference, (str, int, float)) or isinstance(reference, bool):
        return f"must be text or a number, got {type(reference).__name__}"
    if kind == "numeric" and last_number(str(reference)) is None:
        return f"holds no number for the numeric verifier: {str(reference)[:60]!r}"
    if not str(reference).strip():
        return "is empty"
    return None
