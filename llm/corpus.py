"""Read an uploaded pretraining corpus into clean, deduplicated documents.

Formats, chosen by the file's extension (case-insensitive):
  .txt      documents separated by one or more blank lines (a line that is empty or holds only
            spaces/tabs). Single newlines stay inside a document, so paragraphs of one document
            must not be separated by blank lines. A file without blank lines is ONE document.
  .jsonl    one JSON object per line with a string field "text"; blank lines are skipped.
  .csv      a header row with a "text" column; quoted fields may span lines (RFC 4180 quoting).
  .parquet  a string column "text", read in record batches; a null counts as an empty document.

Every file is streamed (nothing reads a whole corpus into memory) and every document is
cleaned the same way:
  1. line endings `\\r\\n` / `\\r` become `\\n`, text is Unicode NFC-normalised, surrounding
     whitespace is stripped;
  2. optionally, emails and phone numbers are replaced by `<email>` / `<phone>`;
  3. an empty document is dropped (`empty_removed`), so is a document whose bytes are not valid
     UTF-8 (`undecodable_removed`: text files are decoded with `surrogateescape`, so one bad
     byte costs one document, not the whole upload), and so is an exact duplicate of an earlier
     document after steps 1-2 (`duplicates_removed`, by a 128-bit BLAKE2b digest).
Structural problems (bad JSON, a line that is not an object, a missing or non-string "text",
a missing column, an unknown extension) raise `CorpusError`, which names the file, the line
(1-based, where there is one) and the problem.

Reading is bounded (`llm.text_files`): a document, a .jsonl line or a CSV field longer than
MAX_DOCUMENT_CHARS is refused; JSON lines are parsed without recursion or giant-number errors; a
Parquet file is read in batches sized from its metadata (row groups that repeat dictionary values are
read dictionary-encoded, so their decoded size is counted before they are decoded), and refused once it
decodes to more than
`decoded_budget(file size)` (a decompression bomb: 20 KB of Parquet can repeat one string into GB).
`inspect_corpus` (the upload check) also refuses a .txt/.jsonl/.csv that is not UTF-8 text (binary,
UTF-16, Latin-1: `check_text_file`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

from llm.text_files import (MAX_DOCUMENT_CHARS, JsonLineError, TextFileProblem, check_text_file, decoded_budget,
                            parse_json_line, too_long_document, too_much_text)

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PREVIEW_CHARS = 500
MAX_DOCUMENT_LENGTHS = 100_000
# Characters read per step from a .txt file; big enough that the split regex runs in C most of the time.
TXT_READ_CHARS = 1 << 20
PARQUET_BATCH_ROWS = 1024                 # at most this many rows per Parquet batch...
PARQUET_BATCH_BYTES = 32 * 1024 * 1024    # ...and about this many bytes of text (from the file's metadata)
# A dictionary-encoded row group storing fewer bytes than this per row repeats its values: read it
# dictionary-encoded, counting the decoded size before decoding (see _read_parquet).
PARQUET_REPEAT_BYTES = 64
JSONL_LINE_CHARS = 2 * MAX_DOCUMENT_CHARS  # a line holds one document plus its JSON escapes
# Text files are decoded leniently: an invalid byte becomes a lone surrogate (U+DC80..U+DCFF),
# which makes that one document fail to re-encode and get dropped. "-sig" drops a leading BOM.
TEXT_ENCODING = "utf-8-sig"
TEXT_ERRORS = "surrogateescape"

# A separator is a newline followed by one or more lines holding nothing but spaces/tabs.
_BLANK_LINES = re.compile(r"\n(?:[ \t\f\v]*\n)+")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Written phone numbers: optional +country code, an area code (bare or in parentheses), then two
# groups of 3-4 digits, separated by space, dot or dash. The look-arounds keep dates
# (2024-01-15), IP addresses and long dotted numbers (1.234.567.890) out.
_PHONE = re.compile(
    r"(?<![\w+.,-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\w|[.,-]\d)")


class CorpusError(ValueError):
    """A corpus file that cannot be read: which file, which line (1-based or None), what is wrong."""

    def __init__(self, file: str, line: int | None, problem: str):
        self.file = file
        self.line = line
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}, line {self.line}"
        return f"{where}: {self.problem}"


@dataclass
class CleaningStats:
    """What cleaning kept and removed; `bytes` counts the UTF-8 bytes of the kept documents."""

    documents: int = 0
    bytes: int = 0
    empty_removed: int = 0
    duplicates_removed: int = 0
    undecodable_removed: int = 0


class CleanDocument(NamedTuple):
    """A kept document with what later stages need without recomputing it."""

    text: str
    num_bytes: int  # len(text.encode("utf-8"))
    digest: bytes  # 16-byte BLAKE2b of the UTF-8 text (deduplication, train/val assignment)


def corpus_format(path: str | os.PathLike) -> str:
    """"txt" | "jsonl" | "csv" | "parquet" from the extension, or CorpusError."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        expected = ", ".join(FORMATS)
        raise CorpusError(path.name, None, f"unknown format {path.suffix or '(no extension)'!r}"
                                           f" (expected one of {expected})")
    return fmt


# ----------------------------------------------------------------------------- raw readers

def _read_txt(path: Path) -> Iterator[str]:
    # newline=None (the default) turns \r\n and \r into \n while reading, even across reads.
    with open(path, encoding=TEXT_ENCODING, errors=TEXT_ERRORS) as f:
        pending = ""
        lines_before_pending = 0  # newlines before `pending` starts: for the line number of a too-long document
        while chunk := f.read(TXT_READ_CHARS):
            text = pending + chunk
            pieces = _BLANK_LINES.split(text)
            # The last piece may continue in the next read (or its separator may), so keep it.
            # A run of blank lines cut by a read can leave whitespace at the start of the next
            # piece; cleaning strips it, so the documents come out the same.
            pending = pieces.pop()
            if len(pending) > MAX_DOCUMENT_CHARS:
                line = lines_before_pending + text.count("\n", 0, len(text) - len(pending)) + 1
                raise CorpusError(path.name, line, too_long_document("the document starting here", len(pending))
                                  + " (documents are separated by a blank line)")
            lines_before_pending += text.count("\n", 0, len(text) - len(pending))
            for piece in pieces:
                # Whitespace-only pieces come from blank lines at the file's start or at a read
                # boundary: by this format's definition they are separators, not documents.
                if piece.strip():
                    yield piece
        if pending.strip():
            yield pending


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _read_jsonl(path: Path) -> Iterator[str]:
    with open(path, encoding=TEXT_ENCODING, errors=TEXT_ERRORS) as f:
        # readline(limit): a line longer than the limit is never held whole.
        for line_number, line in enumerate(iter(lambda: f.readline(JSONL_LINE_CHARS + 1), ""), start=1):
            if len(line) > JSONL_LINE_CHARS:
                raise CorpusError(path.name, line_number, f"the line is longer than {JSONL_LINE_CHARS:,} characters")
            if not line.strip():
                continue
            try:
                record = parse_json_line(line)
            except JsonLineError as error:
                problem = f"invalid JSON ({error.syntax.msg})" if error.syntax else error.problem
                raise CorpusError(path.name, line_number, problem) from None
            if not isinstance(record, dict):
                raise CorpusError(path.name, line_number, f"expected a JSON object, got {_json_type(record)}")
            if "text" not in record:
                fields = ", ".join(record) or "none"
                raise CorpusError(path.name, line_number, f"no 'text' field (fields: {fields})")
            text = record["text"]
            if not isinstance(text, str):
                raise CorpusError(path.name, line_number, f"'text' must be a string, got {_json_type(text)}")
            if len(text) > MAX_DOCUMENT_CHARS:
                raise CorpusError(path.name, line_number, too_long_document("'text'", len(text)))
            yield text


def _read_csv(path: Path) -> Iterator[str]:
    # Pretraining documents are often longer than the csv module's default 128 KiB field limit; the
    # limit is the module's (process-wide), and ours is the same for every reader.
    csv.field_size_limit(MAX_DOCUMENT_CHARS)
    # newline="" hands line endings to the csv module, which is what keeps quoted
    # multi-line fields intact; strict=True turns bad quoting into an error instead of a guess.
    with open(path, encoding=TEXT_ENCODING, errors=TEXT_ERRORS, newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise CorpusError(path.name, None, "empty file (expected a header row with a 'text' column)")
            columns = [name.strip() for name in header]
            if "text" not in columns:
                raise CorpusError(path.name, None, f"no 'text' column (columns: {', '.join(columns)})")
            text_column = columns.index("text")
            while True:
                first_line = reader.line_num + 1  # a quoted field can make one row span many lines
                row = next(reader, None)
                if row is None:
                    return
                if not row:  # a blank line
                    continue
                if len(row) <= text_column:
                    raise CorpusError(path.name, first_line,
                                      f"row has {len(row)} field(s), but 'text' is column {text_column + 1}")
                yield row[text_column]
        except csv.Error as error:
            if "field larger than field limit" in str(error):
                raise CorpusError(path.name, reader.line_num, f"a field is longer than {MAX_DOCUMENT_CHARS:,} "
                                                              f"characters; split it into smaller documents") from None
            raise CorpusError(path.name, reader.line_num, f"malformed CSV ({error})") from None


def _read_parquet(path: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise CorpusError(path.name, None, f"not a readable Parquet file ({error})") from None
    schema = parquet.schema_arrow
    if "text" not in schema.names:
        raise CorpusError(path.name, None, f"no 'text' column (columns: {', '.join(schema.names)})")
    text_type = schema.field("text").type
    if pa.types.is_dictionary(text_type):
        text_type = text_type.value_type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise CorpusError(path.name, None, f"column 'text' has type {text_type}, expected strings")
    size = path.stat().st_size
    budget = decoded_budget(size)
    stored_bytes, rows, repeated = _parquet_text_layout(parquet)
    if stored_bytes > budget:
        raise CorpusError(path.name, None, too_much_text(size))
    batch_rows = max(1, min(PARQUET_BATCH_ROWS, PARQUET_BATCH_BYTES * max(rows, 1) // max(stored_bytes, 1)))
    decoded, row = 0, 0
    try:
        if repeated:
            # The text stays dictionary-encoded in each batch, so a value repeated a million times is held
            # once until its decoded size has been counted (below). Only then: it is 10x slower to read.
            parquet = pq.ParquetFile(path, read_dictionary=["text"])
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=["text"]):
            column = batch.column(0)
            if pa.types.is_dictionary(column.type):
                lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
            else:
                lengths = pc.binary_length(column)
            decoded += pc.sum(lengths).as_py() or 0
            if decoded > budget:
                raise CorpusError(path.name, None, too_much_text(size))
            longest = pc.max(lengths).as_py() or 0
            if longest > 4 * MAX_DOCUMENT_CHARS:  # more bytes than any allowed document can take in UTF-8
                where = row + pc.index(lengths, longest).as_py() + 1
                raise CorpusError(path.name, where, too_long_document(f"row {where:,}", longest))
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()  # counted and within bounds: decode (to_pylist is faster)
            for text in column.to_pylist():
                row += 1
                if text is not None and len(text) > MAX_DOCUMENT_CHARS:
                    raise CorpusError(path.name, row, too_long_document(f"row {row:,}", len(text)))
                yield "" if text is None else text
    except pa.ArrowException as error:
        raise CorpusError(path.name, None, f"corrupt Parquet data ({error})") from None


def _parquet_text_layout(parquet) -> tuple[int, int, bool]:
    """(uncompressed bytes of the text column as stored, rows, whether some row group repeats dictionary
    values: a few bytes of indices per row, which can stand for any length of text) from the metadata."""
    metadata = parquet.metadata
    column_index = [metadata.schema.column(i).path for i in range(metadata.num_columns)].index("text")
    stored, repeated = 0, False
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(column_index)
        stored += chunk.total_uncompressed_size
        if chunk.has_dictionary_page and chunk.total_uncompressed_size < PARQUET_REPEAT_BYTES * max(chunk.num_values, 1):
            repeated = True
    return stored, metadata.num_rows, repeated


_READERS = {"txt": _read_txt, "jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}


# ----------------------------------------------------------------------------- cleaning

def scrub_personal_data(text: str) -> str:
    """Replace email addresses with `<email>` and written phone numbers with `<phone>`.

    A pragmatic filter in the spirit of FineWeb's PII step: it catches the usual written forms
    (jane.doe@example.com, +1 555-123-4567, (020) 7946 0958) and leaves dates, years, IP
    addresses and ordinary numbers alone. It is not a guarantee that no personal data remains.
    """
    if "@" in text:
        text = _EMAIL.sub("<email>", text)
    return _PHONE.sub("<phone>", text)


def normalize_text(text: str) -> str:
    """Unify line endings, NFC-normalise and strip surrounding whitespace."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():  # ASCII is already NFC; skipping it keeps the common case cheap
        text = unicodedata.normalize("NFC", text)
    return text.strip()


def iter_clean_documents(path: str | os.PathLike, stats: CleaningStats | None = None,
                         scrub_pii: bool = False) -> Iterator[CleanDocument]:
    """Stream the kept documents of a corpus file with their UTF-8 size and digest.

    `stats` (if given) is updated as documents go by, so it is complete once the iterator is
    exhausted. Raises CorpusError on structural problems.
    """
    path = Path(path)
    reader = _READERS[corpus_format(path)]
    stats = stats if stats is not None else CleaningStats()
    seen: set[bytes] = set()
    for raw in reader(path):
        text = normalize_text(raw)
        if scrub_pii:
            text = scrub_personal_data(text)
        if not text:
            stats.empty_removed += 1
            continue
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: undecodable bytes, or a bad JSON \\ud800 escape
            stats.undecodable_removed += 1
            continue
        digest = hashlib.blake2b(encoded, digest_size=16).digest()
        if digest in seen:
            stats.duplicates_removed += 1
            continue
        seen.add(digest)
        stats.documents += 1
        stats.bytes += len(encoded)
        yield CleanDocument(text, len(encoded), digest)


def iter_documents(path: str | os.PathLike, stats: CleaningStats | None = None,
                   scrub_pii: bool = False) -> Iterator[str]:
    """Stream the cleaned, deduplicated documents of a corpus file (see the module docstring)."""
    for document in iter_clean_documents(path, stats, scrub_pii):
        yield document.text


read_documents = iter_documents  # the name docs/architecture.md uses


def no_documents_error(path: str | os.PathLike, stats: CleaningStats) -> CorpusError:
    """The error for a corpus in which nothing survives cleaning."""
    return CorpusError(Path(path).name, None,
                       f"no documents left after cleaning ({stats.empty_removed} empty,"
                       f" {stats.duplicates_removed} duplicate(s), {stats.undecodable_removed}"
                       f" undecodable removed)")


def inspect_corpus(path: str | os.PathLike, preview: int = 5,
                   max_lengths: int = MAX_DOCUMENT_LENGTHS) -> dict:
    """Validate a corpus and summarise it for the upload page.

    Returns {"format", "documents", "bytes", "empty_removed", "duplicates_removed",
    "undecodable_removed", "preview": first `preview` documents cut to 500 characters,
    "document_lengths": character length of each kept document, at most `max_lengths` of them}.
    Raises CorpusError if the file is malformed, is not UTF-8 text (a .txt/.jsonl/.csv that is binary,
    UTF-16 or Latin-1: `check_text_file`) or no document survives cleaning.
    """
    fmt = corpus_format(path)
    if fmt != "parquet":
        try:
            check_text_file(path)
        except TextFileProblem as problem:
            raise CorpusError(Path(path).name, problem.line, problem.problem) from None
    stats = CleaningStats()
    previews: list[str] = []
    lengths: list[int] = []
    for document in iter_documents(path, stats):
        if len(previews) < preview:
            previews.append(document[:PREVIEW_CHARS])
        if len(lengths) < max_lengths:
            lengths.append(len(document))
    if stats.documents == 0:
        raise no_documents_error(path, stats)
    return {"format": fmt, **asdict(stats), "preview": previews, "document_lengths": lengths}
