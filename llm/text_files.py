"""Safety checks shared by the dataset readers (`llm.corpus`, `llm.chat_data`): the reading limits, what a
file that is not UTF-8 text really is, and JSON lines parsed without recursion or giant-number errors.

  - `check_text_file(path)` reads a whole file, a block at a time (bounded memory), and says in words a
    person can act on when it is not UTF-8 text: a binary file (a known magic number such as a Windows
    program or a zip archive, a NUL byte, a block mostly of control bytes), UTF-16 / UTF-32 ("save it as
    UTF-8"), or Latin-1 / Windows-1252, naming the line and byte offset of the first bad byte wherever it
    is (a file can turn binary after megabytes of text). The encoding marks and magic numbers are looked
    for in the first `SNIFF_BYTES`.
  - `parse_json_line(text)` is `json.loads` for one line of a .jsonl file that never raises
    RecursionError (nesting is checked first) or Python's int max-digits ValueError: every failure is a
    `JsonLineError` whose message names the column (and the field, for a giant number).
  - The limits: a document (or a line) may be at most `MAX_DOCUMENT_CHARS` long, and what a file decodes
    to may be at most `decoded_budget(file size)` bytes (compressed formats such as Parquet can expand a
    few KB into GB: a decompression bomb).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

MAX_DOCUMENT_CHARS = 8 * 1024 * 1024     # one document (or one line): 8 M characters, a long book twice over
MAX_EXPANSION_RATIO = 100                 # decoded text may be at most this many times the file's size...
MIN_DECODED_BUDGET = 64 * 1024 * 1024     # ...but a small file may always decode to this much
MAX_JSON_DEPTH = 32                       # chat messages sit at depth 3; deeper is a mistake or an attack
SNIFF_BYTES = 64 * 1024                   # the first block: byte order marks, magic numbers, UTF-16 without one
READ_BYTES = 1024 * 1024                  # each later block `check_text_file` reads

# Magic numbers of the binary files people most often rename by mistake, for a message that says which.
_MAGIC = (
    (b"MZ", "a Windows program (.exe/.dll)"), (b"\x7fELF", "a Linux program"), (b"PK\x03\x04", "a zip archive "
    "(or .docx/.xlsx)"), (b"\x1f\x8b", "a gzip archive"), (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"PAR1", "a Parquet file (use the .parquet "
    "extension)"), (b"SQLite format 3", "an SQLite database"), (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"BZh", "a bzip2 archive"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"\xd0\xcf\x11\xe0", "an old Office document"),
)
_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
         (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"))
# Control characters that never occur in text (tab, newlines, form feed, vertical tab and escape do).
_CONTROL = bytes(c for c in range(32) if c not in b"\t\n\r\x0b\x0c\x1b")
_CONTROL_BYTE = re.compile(b"[" + re.escape(_CONTROL) + b"]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_MAX_INT_DIGITS = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300


class JsonLineError(ValueError):
    """A JSON line that cannot be read; `problem` says why and where in the line. `syntax` is the decoder's
    error when the line is not JSON at all (readers word that case their own way)."""

    def __init__(self, problem: str, syntax: json.JSONDecodeError | None = None):
        super().__init__(problem)
        self.problem, self.syntax = problem, syntax


class TextFileProblem(ValueError):
    """A file that is not UTF-8 text: `problem` says what it is instead; `line` is 1-based or None."""

    def __init__(self, problem: str, line: int | None = None):
        super().__init__(problem)
        self.problem, self.line = problem, line


def decoded_budget(file_size: int) -> int:
    """How many bytes of text a file of `file_size` bytes may decode to."""
    return max(MIN_DECODED_BUDGET, MAX_EXPANSION_RATIO * max(0, file_size))


def too_much_text(file_size: int) -> str:
    """The message for a file that decodes to more than `decoded_budget` allows."""
    return (f"the file decodes to more than {decoded_budget(file_size) // (1024 * 1024)} MB of text from "
            f"{file_size:,} bytes (at most {MAX_EXPANSION_RATIO}x its size, or "
            f"{MIN_DECODED_BUDGET // (1024 * 1024)} MB); it looks like a decompression bomb — split it or store "
            f"it uncompressed")


def too_long_document(what: str, length: int) -> str:
    return (f"{what} is {length:,} characters long; the limit is {MAX_DOCUMENT_CHARS:,} — split it into smaller "
            f"documents")


def _looks_utf16(sample: bytes) -> bool:
    """UTF-16 without a byte order mark: ASCII text with a NUL in every other byte."""
    if len(sample) < 4:
        return False
    even, odd = sample[0::2], sample[1::2]
    return max(even.count(0) / len(even), odd.count(0) / len(odd)) > 0.4 and min(even.count(0), odd.count(0)) == 0


def check_text_file(path: str | os.PathLike) -> None:
    """Raise TextFileProblem at the first sign that the file is not UTF-8 text (see the module docstring).

    Reads the file once, one block at a time: memory stays at one block whatever the file's size.
    """
    with open(path, "rb") as handle:
        first = handle.read(SNIFF_BYTES)
        _check_start(first)
        position = _TextPosition()
        block, pending = first, b""  # pending: a UTF-8 sequence cut by the end of the previous block
        while block:
            following = handle.read(READ_BYTES)
            data = pending + block  # starts at position.offset
            _check_binary(data, position)
            pending = _check_utf8(data, position, final=not following)
            block = following


def _check_start(sample: bytes) -> None:
    """What the first bytes say: a byte order mark of UTF-16/32, UTF-16 without one, a binary file's magic."""
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            raise TextFileProblem(f"this file is {encoding}; save it as UTF-8 and upload it again")
    if _looks_utf16(sample):
        raise TextFileProblem("this file is UTF-16; save it as UTF-8 and upload it again")
    for magic, what in _MAGIC:
        if sample.startswith(magic):
            raise TextFileProblem(f"this looks like a binary file ({what}), not text")


class _TextPosition:
    """Where the bytes checked so far end: their count, their newlines and the offset after the last one."""

    def __init__(self):
        self.offset, self.lines, self.line_start = 0, 0, 0

    def where(self, data: bytes, index: int) -> tuple[int, int, int]:
        """(byte offset, 1-based line, 1-based column) of `data[index]`, `data` starting at `self.offset`."""
        newline = data.rfind(b"\n", 0, index)
        line_start = self.offset + newline + 1 if newline >= 0 else self.line_start
        offset = self.offset + index
        return offset, self.lines + data.count(b"\n", 0, index) + 1, offset - line_start + 1

    def advance(self, data: bytes) -> None:
        newline = data.rfind(b"\n")
        if newline >= 0:
            self.line_start = self.offset + newline + 1
        self.lines += data.count(b"\n")
        self.offset += len(data)


def _check_binary(block: bytes, position: _TextPosition) -> None:
    """A NUL byte, or a block of which more than a tenth is control bytes: binary, not text."""
    nul = block.find(b"\x00")
    if nul >= 0:
        offset, line, _ = position.where(block, nul)
        raise TextFileProblem(f"this looks like a binary file, not text (a NUL byte at byte offset {offset:,})",
                              line=line)
    controls = len(block) - len(block.translate(None, _CONTROL))
    if controls > len(block) // 10:
        offset, line, _ = position.where(block, _CONTROL_BYTE.search(block).start())
        raise TextFileProblem(f"this looks like a binary file, not text ({controls:,} control bytes in a block of "
                              f"{len(block):,}, the first at byte offset {offset:,})", line=line)


def _check_utf8(data: bytes, position: _TextPosition, final: bool) -> bytes:
    """Raise TextFileProblem at the first byte of `data` that is not UTF-8; return the bytes of a sequence cut
    by the end of `data` (unless `final`), to be checked with the next block. Advances `position`."""
    try:
        data.decode("utf-8")
        position.advance(data)
        return b""
    except UnicodeDecodeError as error:
        # A sequence cut by the end of the block is not an error in the file: it ends in the next block.
        if not final and error.start >= len(data) - 3 and error.reason == "unexpected end of data":
            position.advance(data[:error.start])
            return data[error.start:]
        index = error.start
    offset, line, column = position.where(data, index)
    raise TextFileProblem(f"the line is not valid UTF-8 text: byte 0x{data[index]:02X} at column {column:,} (byte "
                          f"offset {offset:,}); the file looks like Latin-1 or Windows-1252 — save it as UTF-8 and "
                          f"upload it again", line=line)


def parse_json_line(text: str) -> Any:
    """`json.loads(text)`, or JsonLineError naming where and why (never RecursionError or a bare ValueError)."""
    if not _json_depth_ok(text):
        raise JsonLineError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonLineError(f"not valid JSON ({error.msg} at column {error.colno})", error) from None
    except RecursionError:  # unreachable after the depth check; kept so no input can become a 500
        raise JsonLineError("not readable JSON: nested too deeply for the parser") from None
    except ValueError:  # Python refuses to convert integers of more than sys.get_int_max_str_digits() digits
        raise JsonLineError(_giant_number(text)) from None


def _giant_number(text: str) -> str:
    """The message for a number Python will not convert, naming the field it is the value of (if any)."""
    masked = _JSON_STRING.sub(lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', text)  # same positions
    number = re.search(r"\d{%d,}" % (_MAX_INT_DIGITS + 1), masked)
    if number is None:
        return (f"not readable JSON: a number with more than {_MAX_INT_DIGITS:,} digits; numbers may have at most "
                f"{_MAX_INT_DIGITS:,}")
    key = re.search(r'"((?:[^"\\]|\\.)*)"\s*:\s*-?$', text[:number.start()])
    field = f"field {key.group(1)!r}: " if key else ""
    return (f"not readable JSON: {field}a number with {len(number.group(0)):,} digits at column {number.start() + 1}; numbers may "
            f"have at most {_MAX_INT_DIGITS:,} digits")


def _json_depth_ok(text: str) -> bool:
    """True if brackets nest at most MAX_JSON_DEPTH deep (checked before json.loads, which recurses).

    Brackets inside strings do not count, so strings (escaped quotes included) are cut out first; both
    steps run in the regex engine, which matters for 50k-line files of code answers.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # cannot nest deeper than it opens
        return True
    depth = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return False
    return True
