"""Which kind of dataset a file looks like, from its first lines: so an upload refused (or stored) as one kind can
say which kind the file is ("this looks like a chat dataset: upload it as kind chat").

The kinds and their formats are those the readers take: `llm.corpus` (text) and `llm.chat_data` (chat,
preference, prompts, benchmark). This only looks at the keys of the first JSON lines, or at whether the lines
are JSON at all; it never decides what is stored (the reader of the kind the person chose does), so it may
answer None (cannot tell) but should never name a kind the file is not.
"""

from __future__ import annotations

import os
from pathlib import Path

from llm.chat_data import EXTENSIONS
from llm.text_files import JsonLineError, parse_json_line

SAMPLE_LINES = 20              # non-blank lines looked at: every one must point at the same kind
MAX_SAMPLE_LINE_BYTES = 1 << 20  # a longer line is not read whole (the readers refuse it anyway)

# What a file of each kind holds, as the hint says it.
WHAT_IT_HOLDS = {
    "chat": "conversations",
    "preference": "chosen and rejected answers",
    "prompts": "prompts, optionally with a reference answer",
    "benchmark": "questions with choices and an answer",
    "feedback": "single answers marked good or bad (label true / false)",
    "text": 'documents in a "text" field',
}


def kind_of_record(record: dict) -> str | None:
    """The kind one JSON line's keys belong to (the formats `llm.chat_data` and `llm.corpus` read), or None."""
    keys = set(record)
    if {"chosen", "rejected"} <= keys:
        return "preference"  # before chat: a pair has a prompt too
    if {"prompt", "completion", "label"} <= keys:
        return "feedback"  # before chat: an unpaired answer has a prompt and a completion too
    if {"question", "choices", "answer"} <= keys:
        return "benchmark"
    if "answer" in keys and keys & {"prompt", "messages"}:
        return "prompts"  # before chat: prompts with reference answers (GRPO's), in either prompt form
    if keys & {"messages", "conversations"} or {"instruction", "output"} <= keys or {"prompt", "completion"} <= keys:
        return "chat"
    if "prompt" in keys:
        return "prompts"
    if isinstance(record.get("text"), str):
        return "text"
    return None


def _sample(path: Path) -> list[str] | None:
    """The first SAMPLE_LINES non-blank lines, or None when they cannot be read as UTF-8 text."""
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_SAMPLE_LINE_BYTES + 2), b""), start=1):
            if len(raw.rstrip(b"\r\n")) > MAX_SAMPLE_LINE_BYTES:
                return None
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                return None
            if text.strip():
                lines.append(text)
            if len(lines) == SAMPLE_LINES:
                break
    return lines or None


def _look(path: Path) -> str | None:
    """A kind, "plain" (no line is JSON), or None (unreadable, mixed, or keys of no kind's format)."""
    if path.suffix.lower() not in (".jsonl", ".txt"):
        return None  # csv and parquet are text's formats only: nothing to suggest
    try:
        lines = _sample(path)
    except OSError:
        return None
    if lines is None:
        return None
    kinds = set()
    for line in lines:
        try:
            record = parse_json_line(line)
        except JsonLineError:
            kinds.add("plain")
            continue
        kinds.add(kind_of_record(record) if isinstance(record, dict) else None)
    return kinds.pop() if len(kinds) == 1 else None


def looks_like(path: str | os.PathLike) -> str | None:
    """"chat", "preference", "prompts", "benchmark", "feedback" or "text" when the file's first lines all say the same (JSON
    objects of one kind's format, or no JSON at all: plain text), else None."""
    kind = _look(Path(path))
    return "text" if kind == "plain" else kind


def kind_hint(path: str | os.PathLike, chosen: str) -> str:
    """The sentence that suggests the kind (or the extension) the file looks like when the person chose
    another, or "" when there is nothing to suggest."""
    path = Path(path)
    kind = _look(path)
    if kind == "plain":
        if chosen in ("text", "prompts"):  # plain text is what both read from a .txt
            return "this looks like plain text, not JSON lines: save it as .txt" if path.suffix.lower() == ".jsonl" \
                else ""
        return ("this looks like plain text: upload it as kind text (documents separated by a blank line) or "
                "prompts (one prompt a line)")
    if kind is None or kind == chosen:
        return ""
    extensions = EXTENSIONS.get(kind, (path.suffix.lower(),))
    rename = "" if path.suffix.lower() in extensions else f"save it as {extensions[-1]} and "
    return f"this looks like a {kind} dataset ({WHAT_IT_HOLDS[kind]}): {rename}upload it as kind {kind}"
