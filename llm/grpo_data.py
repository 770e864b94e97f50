"""The prompts GRPO practises on: a prompts dataset whose lines may carry a reference answer.

    read_prompt_records(data, verifier="none")  -> [{"prompt": messages, "answer": str | None}]

A line is JSON with `prompt` (a string, or messages ending with a user turn) or `messages` (the same), and
`answer`: the reference a verifier compares with (llm/verifiers.py). A .txt file holds one prompt a line, no
answers. When the chosen verifier needs a reference (exact, numeric, contains), a line without a usable `answer`
is refused with its file, line and why (`llm.chat_data.DataFormatError`), at submit as at the start of a run.
Imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from llm.chat_data import DataFormatError, _Bad, _prompt_record, _records, read_prompts
from llm.verifiers import needs_reference, reference_problem


def _record(record: dict, verifier: str) -> dict:
    prompt = _prompt_record(record)  # a prompts dataset's line: prompt or messages, as its upload reads it
    answer = record.get("answer")
    problem = reference_problem(verifier, answer)
    if problem is not None:
        raise _Bad("answer", problem)
    return {"prompt": prompt, "answer": None if answer is None else str(answer)}


def read_prompt_records(data: str | os.PathLike | Sequence[dict], verifier: str = "none",
                        display_name: str | None = None) -> list[dict]:
    """Every prompt with its reference answer (None where the line has none), from a file or from records
    ({"prompt" or "messages", "answer"}); DataFormatError at the first line the verifier cannot use."""
    if not isinstance(data, (str, os.PathLike)):
        records = []
        for number, record in enumerate(data, start=1):
            try:
                records.append(_record(record, verifier))
            except _Bad as bad:
                raise DataFormatError(display_name or "prompts", number, bad.field, bad.problem) from None
        if not records:
            raise DataFormatError(display_name or "prompts", None, None, "no prompts")
        return records
    path = Path(data)
    name = display_name or path.name
    if path.suffix.lower() == ".txt":
        if needs_reference(verifier):
            raise DataFormatError(name, None, "answer", f"a .txt prompts file has no reference answers, which the "
                                                        f"{verifier} verifier needs; upload JSONL with prompt and answer")
        return [{"prompt": prompt, "answer": None} for prompt in read_prompts(path, display_name)]
    records = []
    for number, record in _records(path, name):
        try:
            records.append(_record(record, verifier))
        except _Bad as bad:
            raise DataFormatError(name, number, bad.field, bad.problem) from None
    if not records:
        raise DataFormatError(name, None, None, "the file holds no prompts")
    return records
