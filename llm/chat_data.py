"""Reading chat, preference, prompt and benchmark datasets into one normal form, refusing bad lines by number.

Normal forms (plain JSON-ready values):
  chat        a conversation: [{"role": "system"|"user"|"assistant", "content": str}, ...] with at least
              one assistant turn and a system message, if any, first
  preference  {"prompt": [messages ending with a user turn], "chosen": [assistant messages],
               "rejected": [assistant messages]} (+ "margin": float when the line has one)
  prompts     a conversation ending with a user turn
  benchmark   {"question": str, "choices": [str, ...] (at least 2, distinct), "answer": index of the right
               choice, "context": str ("" when the line has none)}: a multiple-choice question

Formats accepted (JSON Lines unless said otherwise):
  chat        OpenAI {"messages": [{role, content}]}; ShareGPT {"conversations": [{from, value}]} with
              from = system | human | gpt (user / assistant too); Alpaca {"instruction", "input"?,
              "output", "system"?}; TRL {"prompt", "completion"} as strings or message lists
  preference  TRL explicit {"prompt", "chosen", "rejected"} and implicit {"chosen", "rejected"} (the
              prompt is the shared leading messages), as strings or message lists; HH-RLHF
              transcripts ("\\n\\nHuman: … \\n\\nAssistant: …", leading blank lines optional) in
              either form; an explicit HH prompt may end with the empty "\\n\\nAssistant:" cue
  prompts     .txt one prompt per non-empty line; .jsonl {"prompt": str | messages} or {"messages": messages
              ending with a user turn}, optionally with an "answer" (GRPO's reference, llm/grpo_data.py)
  benchmark   {"question", "choices", "answer", "context"?} (other keys, such as an id, are ignored)
  feedback    TRL's unpaired preference format {"prompt", "completion", "label"}, as strings or message lists

A line that cannot be read raises `DataFormatError(file, line, field, problem)`; nothing is returned
half-way. Lines are read one at a time; a line longer than MAX_LINE_BYTES or nested deeper than
MAX_JSON_DEPTH is refused before it is parsed, a number Python will not convert is named with its field,
and a file that is not UTF-8 text (binary, UTF-16, Latin-1) is refused saying so (`llm.text_files`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterator

from llm.chat import ROLES
from llm.text_files import JsonLineError, TextFileProblem, check_text_file, parse_json_line

MAX_LINE_BYTES = 1 << 20   # 1 MiB: a conversation, not a book
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
HH_PROMPT_CUE = re.compile(r"\n\nAssistant:\s*$")
EXTENSIONS = {"chat": (".jsonl",), "preference": (".jsonl",), "prompts": (".txt", ".jsonl"), "benchmark": (".jsonl",),
              "feedback": (".jsonl",)}


class DataFormatError(ValueError):
    """A dataset line that cannot be read: which file, line (1-based) and field, and what is wrong."""

    def __init__(self, file: str, line: int | None, field: str | None, problem: str):
        self.file, self.line, self.field, self.problem = file, line, field, problem
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file] + ([f"line {self.line}"] if self.line is not None else []) + (
            [f"field {self.field}"] if self.field else [])
        return f"{', '.join(where)}: {self.problem}"


class _Bad(Exception):
    """Raised inside a line's parsing; the reader adds the file and line number."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


# ----------------------------------------------------------------------------- lines

def _lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines, read one at a time as bytes (bounded)."""
    try:
        check_text_file(path)
    except TextFileProblem as problem:
        raise DataFormatError(name, problem.line, None, problem.problem) from None
    with open(path, "rb") as handle:
        # Read at most MAX_LINE_BYTES + the line ending, so a too-long line is never held whole.
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 2), b""), start=1):
            if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
                raise DataFormatError(name, number, None, f"the line is longer than {MAX_LINE_BYTES // 1024} KB")
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataFormatError(name, number, None, "the line is not valid UTF-8 text; save the file as "
                                                          "UTF-8") from None
            if text.strip():
                yield number, text


def _records(path: Path, name: str) -> Iterator[tuple[int, dict]]:
    for number, text in _lines(path, name):
        try:
            record = parse_json_line(text)
        except JsonLineError as error:
            raise DataFormatError(name, number, None, error.problem) from None
        if not isinstance(record, dict):
            raise DataFormatError(name, number, None, f"expected a JSON object, got {type(record).__name__}")
        yield number, record


# ----------------------------------------------------------------------------- messages

def _text(value: Any, field: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _Bad(field, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _Bad(field, "is empty")
    return value


def _messages(value: Any, field: str) -> list[dict]:
    """A list of {role, content} checked: known roles, string content, no empty assistant turn."""
    if not isinstance(value, list) or not value:
        raise _Bad(field, "must be a non-empty list of messages")
    messages = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise _Bad(where, f"must be an object with role and content, got {type(item).__name__}")
        role = item.get("role")
        if role not in ROLES:
            raise _Bad(f"{where}.role", f"unknown role {role!r}; use {', '.join(ROLES)}")
        content = _text(item.get("content"), f"{where}.content", allow_empty=role != "assistant")
        if role == "system" and index != 0:
            raise _Bad(f"{where}.role", "a system message may only come first")
        messages.append({"role": role, "content": content})
    return messages


def _check_conversation(messages: list[dict], field: str) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise _Bad(field, "the conversation has no assistant turn to learn from")
    return messages


def _as_prompt(value: Any, field: str) -> list[dict]:
    """A prompt: a string (one user message) or messages ending with a user turn."""
    if isinstance(value, str):
        return [{"role": "user", "content": _text(value, field)}]
    messages = _messages(value, field)
    if messages[-1]["role"] != "user":
        raise _Bad(field, "a prompt must end with a user message")
    return messages


def _as_answer(value: Any, field: str) -> list[dict]:
    """An answer: a string (one assistant message) or assistant messages."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": _text(value, field)}]
    messages = _messages(value, field)
    if any(m["role"] != "assistant" for m in messages):
        raise _Bad(field, "an answer may hold assistant messages only")
    return messages


# ----------------------------------------------------------------------------- chat

def _chat_record(record: dict) -> list[dict]:
    if "messages" in record:
        return _check_conversation(_messages(record["messages"], "messages"), "messages")
    if "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list) or not turns:
            raise _Bad("conversations", "must be a non-empty list of turns")
        converted = []
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise _Bad(f"conversations[{index}]", "must be an object with from and value")
            role = SHAREGPT_ROLES.get(turn.get("from"))
            if role is None:
                raise _Bad(f"conversations[{index}].from", f"unknown speaker {turn.get('from')!r}; use system, "
                                                           f"human or gpt")
            converted.append({"role": role, "content": turn.get("value")})
        try:
            messages = _messages(converted, "conversations")
        except _Bad as bad:  # name ShareGPT's own fields
            raise _Bad((bad.field or "").replace(".content", ".value").replace(".role", ".from"), bad.problem)
        return _check_conversation(messages, "conversations")
    if "instruction" in record and "output" in record:
        instruction = _text(record["instruction"], "instruction")
        extra = record.get("input") or ""
        user = instruction + ("\n\n" + _text(extra, "input") if extra else "")
        messages = [{"role": "system", "content": _text(record["system"], "system")}] if record.get("system") else []
        return messages + [{"role": "user", "content": user},
                           {"role": "assistant", "content": _text(record["output"], "output")}]
    if "prompt" in record and "completion" in record:
        return _as_prompt(record["prompt"], "prompt") + _as_answer(record["completion"], "completion")
    raise _Bad(None, f"no chat format recognised (keys: {', '.join(sorted(record)) or 'none'}); expected "
                     f"messages, conversations, instruction + output, or prompt + completion")


def read_chat(path: str | Path, display_name: str | None = None) -> list[list[dict]]:
    """Every conversation of a chat .jsonl in the normal form; DataFormatError on the first bad line."""
    return _read(path, display_name, "chat", _chat_record)


# ----------------------------------------------------------------------------- preference

def _is_hh(value: Any) -> bool:
    """An HH-RLHF transcript starts with "Human:" (after the blank lines Anthropic's files put first)."""
    return isinstance(value, str) and value.lstrip().startswith("Human:")


def _hh_messages(text: str, field: str) -> list[dict]:
    """An HH-RLHF transcript ("\\n\\nHuman: … \\n\\nAssistant: …") as messages."""
    parts = HH_TURN.split("\n\n" + text.lstrip())
    if len(parts) < 3 or parts[0].strip():
        raise _Bad(field, 'an HH-RLHF transcript must start with "\\n\\nHuman:"')
    messages = [{"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
                for speaker, content in zip(parts[1::2], parts[2::2])]
    return _messages(messages, field)


def _hh_prompt(text: str, field: str) -> list[dict]:
    """An HH-RLHF prompt; explicit HH pairs often end it with the empty "\\n\\nAssistant:" cue."""
    messages = _hh_messages(HH_PROMPT_CUE.sub("", text), field)
    if messages[-1]["role"] != "user":
        raise _Bad(field, "a prompt must end with a Human turn")
    return messages


def _side(value: Any, field: str) -> list[dict] | str:
    if _is_hh(value):
        return _hh_messages(value, field)
    if isinstance(value, str):
        return _text(value, field)
    return _messages(value, field)


def _after_prompt(answer: list[dict] | str, prompt: list[dict], hh: bool) -> list[dict] | str:
    """An explicit pair's answer without the prompt repeated in front of it (HH-RLHF files repeat it),
    and without HH's "Assistant:" label when the answer is a bare string. After an HH prompt that ends
    with the "Assistant:" cue the answer is " text": trimmed, as the turns of a whole transcript are."""
    if isinstance(answer, str):
        stripped = answer.lstrip()
        if stripped.startswith("Assistant:"):
            return stripped[len("Assistant:"):].strip()
        return answer.strip() if hh else answer
    return answer[len(prompt):] if answer[:len(prompt)] == prompt else answer


def _split_shared_prompt(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    prompt = chosen[:shared]
    if not prompt or prompt[-1]["role"] != "user":
        raise _Bad("chosen", "chosen and rejected share no prompt (their leading messages must be the same and "
                             "end with a user turn)")
    return prompt, chosen[shared:], rejected[shared:]


def _preference_record(record: dict) -> dict:
    if "chosen" not in record or "rejected" not in record:
        raise _Bad(None, f"expected chosen and rejected (and optionally prompt); keys: "
                         f"{', '.join(sorted(record)) or 'none'}")
    chosen, rejected = _side(record["chosen"], "chosen"), _side(record["rejected"], "rejected")
    if "prompt" in record:
        prompt_value = record["prompt"]
        hh = _is_hh(prompt_value)
        prompt = _hh_prompt(prompt_value, "prompt") if hh else _as_prompt(prompt_value, "prompt")
        chosen_answer = _as_answer(_after_prompt(chosen, prompt, hh), "chosen")
        rejected_answer = _as_answer(_after_prompt(rejected, prompt, hh), "rejected")
    else:
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise _Bad("chosen", "without a prompt field, chosen and rejected must be conversations (or HH-RLHF "
                                 "transcripts) that start with the same prompt")
        prompt, chosen_answer, rejected_answer = _split_shared_prompt(chosen, rejected)
    for field, answer in (("chosen", chosen_answer), ("rejected", rejected_answer)):
        if not answer or any(m["role"] != "assistant" for m in answer):
            raise _Bad(field, "the answer after the prompt must be assistant messages")
    if chosen_answer == rejected_answer:
        raise _Bad("rejected", "chosen and rejected are the same answer: no preference to learn")
    pair = {"prompt": prompt, "chosen": chosen_answer, "rejected": rejected_answer}
    if "margin" in record:
        pair["margin"] = _margin(record["margin"])
    return pair


def _margin(value: Any) -> float:
    """A pair's margin as a float; NaN, infinities (1e999) and ints too big for a float are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad("margin", f"must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Bad("margin", "must be a finite number")
    return number


def read_preference(path: str | Path, display_name: str | None = None) -> list[dict]:
    """Every preference pair of a .jsonl in the normal form; DataFormatError on the first bad line."""
    return _read(path, display_name, "preference", _preference_record)


# ----------------------------------------------------------------------------- prompts

def _prompt_record(record: dict) -> list[dict]:
    # `messages` ending with a user turn is how OpenAI-style prompt files (GSM8K-like sets with an `answer`) write
    # a prompt; other keys (an `answer` for GRPO's verifiers, an id) are the reader of the job's concern.
    for field in ("prompt", "messages"):
        if field in record:
            return _as_prompt(record[field], field)
    raise _Bad(None, f"expected a prompt (or messages) field; keys: {', '.join(sorted(record)) or 'none'}")


def read_prompts(path: str | Path, display_name: str | None = None) -> list[list[dict]]:
    """Every prompt as a conversation ending with a user turn (.txt: one per line; .jsonl: prompt or messages)."""
    path = Path(path)
    name = display_name or path.name
    if path.suffix.lower() == ".txt":
        prompts = [[{"role": "user", "content": text.strip()}] for _, text in _lines(path, name)]
        if not prompts:
            raise DataFormatError(name, None, None, "the file holds no prompts")
        return prompts
    return _read(path, display_name, "prompts", _prompt_record)


# ----------------------------------------------------------------------------- benchmark

def _benchmark_record(record: dict) -> dict:
    missing = [key for key in ("question", "choices", "answer") if key not in record]
    if missing:
        raise _Bad(None, f"expected question, choices and answer (and optionally context); missing "
                         f"{', '.join(missing)}")
    question = _text(record["question"], "question")
    context = _text(record["context"], "context", allow_empty=True) if record.get("context") is not None else ""
    choices = record["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise _Bad("choices", "must be a list of at least 2 answers to choose from")
    choices = [_text(choice, f"choices[{index}]") for index, choice in enumerate(choices)]
    for index, choice in enumerate(choices):
        if choice in choices[:index]:
            raise _Bad(f"choices[{index}]", f"repeats choices[{choices.index(choice)}]: no way to tell them apart")
    answer = record["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise _Bad("answer", f"must be the index of the right choice (a whole number), got {answer!r}")
    if not 0 <= answer < len(choices):
        raise _Bad("answer", f"must be an index into choices, from 0 to {len(choices) - 1}; got {answer}")
    return {"question": question, "choices": choices, "answer": answer, "context": context}


def read_benchmark(path: str | Path, display_name: str | None = None) -> list[dict]:
    """Every multiple-choice question of a benchmark .jsonl in the normal form; DataFormatError on the first
    bad line."""
    return _read(path, display_name, "benchmark", _benchmark_record)


# ----------------------------------------------------------------------------- feedback (unpaired)

def _feedback_record(record: dict) -> dict:
    missing = [key for key in ("prompt", "completion", "label") if key not in record]
    if missing:
        raise _Bad(None, f"expected prompt, completion and label (TRL's unpaired format); missing "
                         f"{', '.join(missing)}")
    label = record["label"]
    if not isinstance(label, bool):
        raise _Bad("label", f"must be true (a good answer) or false (a bad one), got {label!r}")
    return {"prompt": _as_prompt(record["prompt"], "prompt"),
            "completion": _as_answer(record["completion"], "completion"), "label": label}


def read_feedback(path: str | Path, display_name: str | None = None) -> list[dict]:
    """Every answer marked good or bad of an unpaired .jsonl in the normal form; DataFormatError on the first
    bad line."""
    return _read(path, display_name, "feedback", _feedback_record)


# ----------------------------------------------------------------------------- dispatch

READERS = {"chat": read_chat, "preference": read_preference, "prompts": read_prompts, "benchmark": read_benchmark,
           "feedback": read_feedback}


def _read(path: str | Path, display_name: str | None, kind: str, parse) -> list:
    path = Path(path)
    name = display_name or path.name
    items = []
    for number, record in _records(path, name):
        try:
            items.append(parse(record))
        except _Bad as bad:
            raise DataFormatError(name, number, bad.field, bad.problem) from None
    if not items:
        raise DataFormatError(name, None, None, f"the file holds no {kind} lines")
    return items


def read_dataset(kind: str, path: str | Path, display_name: str | None = None) -> list:
    """The items of a dataset of `kind` (chat, preference, prompts, benchmark, feedback) in their normal form."""
    path = Path(path)
    name = display_name or path.name
    if kind not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(READERS)}")
    if path.suffix.lower() not in EXTENSIONS[kind]:
        raise DataFormatError(name, None, None, f"a {kind} dataset must be {' or '.join(EXTENSIONS[kind])}, "
                                                f"not {path.suffix or 'a file without extension'}")
    return READERS[kind](path, display_name)
