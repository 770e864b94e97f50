"""The first step of `clean`: raw web data → JSONL shards the datatrove pipeline reads (`llm.clean`).

Takes files or folders of: WARC (`.warc`, `.warc.gz`: read with datatrove's `WarcReader`, HTML responses only),
HTML pages (`.html`, `.htm`: one page a file), JSON lines (`.jsonl`, `.jsonl.gz`: an `html` or a `text` field per
line, an optional `url`) and plain text (`.txt`, `.txt.gz`: documents separated by a blank line). Every document
becomes one line `{"id", "text", "format": "html"|"text", "url", "source"}` of a shard `shards/NNNNN.jsonl`; shards
are cut at about `shard_bytes`, so one large upload still gives every worker a task.

Nothing here stops the run for one bad thing in the data: a malformed line, an over-long document, a binary
file, a WARC cut off in the middle (what was read before the cut is kept) are counted as removed with their reason,
and a few of them are kept as the report's examples. Only inputs with no document at all are an error (`NoDocuments`).
Memory stays bounded: one document at a time, never longer than `max_document_bytes` (a longer line is skipped
without being read whole).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

HTML_SUFFIXES = (".html", ".htm")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".text")
READ_BLOCK = 1 << 20
SNIFF_BYTES = 8192


class NoDocuments(ValueError):
    """The inputs hold no document the pipeline could read."""


def input_format(path: Path) -> str | None:
    """"warc", "html", "jsonl" or "text" from the file's name, or None for a file of no format we read."""
    name = path.name.lower()
    for fmt, suffixes in (("warc", WARC_SUFFIXES), ("html", HTML_SUFFIXES), ("jsonl", JSONL_SUFFIXES),
                          ("text", TEXT_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    return None


def input_files(inputs: list[Path]) -> list[Path]:
    """The files to read: each file given, and every file under each folder given (sorted, hidden ones left out)."""
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return files


@dataclass
class InputSummary:
    """What the first step read: documents and bytes in, what it removed and why, the shards it wrote."""

    documents: int = 0            # documents read (kept + removed here)
    bytes: int = 0                # their UTF-8 bytes (removed ones counted as far as they were read)
    kept: int = 0
    kept_bytes: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)   # removed here: {"reason", "source", "text"}
    files: list[dict] = field(default_factory=list)      # {"name", "format", "documents", "problem"}
    shards: list[str] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)

    def remove(self, reason: str, source: str, text: str, size: int, examples_per_reason: int) -> None:
        self.documents += 1
        self.bytes += size
        self.removed[reason] = self.removed.get(reason, 0) + 1
        if sum(1 for e in self.examples if e["reason"] == reason) < examples_per_reason:
            self.examples.append({"reason": reason, "source": source, "text": text[:2000]})

    def to_dict(self) -> dict:
        return self.__dict__.copy()


class _ShardWriter:
    def __init__(self, folder: Path, shard_bytes: int):
        self.folder, self.shard_bytes = folder, shard_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        self.handle: BinaryIO | None = None
        self.written = 0

    def write(self, record: dict) -> None:
        if self.handle is None or self.written >= self.shard_bytes:
            self.close()
            name = f"{len(self.names):05d}.jsonl"
            self.names.append(name)
            self.handle = open(self.folder / name, "wb")
            self.written = 0
        line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        self.handle.write(line)
        self.written += len(line)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _lines(handle: BinaryIO, limit: int) -> Iterator[tuple[bytes | None, int]]:
    """(line, size) for each line; line is None when it is longer than `limit` (then it is skipped unread)."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            size = len(line)
            while True:  # skip the rest of the over-long line a block at a time
                rest = handle.readline(READ_BLOCK)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None, size
            continue
        yield line, len(line)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        import cchardet  # faust-cchardet: datatrove's WarcReader decodes pages the same way

        encoding = cchardet.detect(data[:100_000]).get("encoding") or "utf-8"
        try:
            return data.decode(encoding, errors="replace")
        except LookupError:
            return data.decode("utf-8", errors="replace")


def _looks_binary(path: Path) -> bool:
    with _open(path) as handle:
        head = handle.read(SNIFF_BYTES)
    return b"\x00" in head


class _Reader:
    """Reads every input file into the shards, counting what it removes."""

    def __init__(self, writer: _ShardWriter, summary: InputSummary, max_document_bytes: int, examples: int):
        self.writer, self.summary = writer, summary
        self.limit, self.examples = max_document_bytes, examples

    def keep(self, source: str, number: int, text: str, fmt: str, url: str | None) -> None:
        text = text.replace("\x00", "")
        size = len(text.encode("utf-8", errors="replace"))
        if not text.strip():
            self.summary.remove("empty", source, text, size, self.examples)
            return
        if size > self.limit:
            self.summary.remove("too_long", source, text, size, self.examples)
            return
        record = {"id": f"{source}/{number}", "text": text, "format": fmt, "source": source}
        if url:
            record["url"] = url
        self.writer.write(record)
        self.summary.documents += 1
        self.summary.bytes += size
        self.summary.kept += 1
        self.summary.kept_bytes += size
        self.summary.formats[fmt] = self.summary.formats.get(fmt, 0) + 1

    def too_long(self, source: str, size: int) -> None:
        self.summary.remove("too_long", source, f"(a document of {size:,} bytes, longer than the limit of "
                                                f"{self.limit:,})", size, self.examples)

    def read_warc(self, path: Path, source: str) -> None:
        from datatrove.pipeline.readers import WarcReader

        # compression=None: warcio reads gzip members itself. Through fsspec's gzip (datatrove's "infer") a WARC
        # cut off in its last member yielded no record at all, silently; warcio keeps the records before the cut.
        reader = WarcReader(str(path.parent), compression=None)
        for number, document in enumerate(reader.read_file(path.name)):
            self.keep(source, number, document.text, "html", document.metadata.get("url"))

    def read_html(self, path: Path, source: str) -> None:
        size = path.stat().st_size
        if size > self.limit:
            self.too_long(source, size)
            return
        self.keep(source, 0, _decode(path.read_bytes()), "html", None)

    def read_jsonl(self, path: Path, source: str) -> None:
        with _open(path) as handle:
            for number, (line, size) in enumerate(_lines(handle, self.limit)):
                if line is None:
                    self.too_long(source, size)
                    continue
                if not line.strip():
                    continue
                text = _decode(line)
                try:
                    record = json.loads(text)
                except ValueError:
                    self.summary.remove("malformed_json", f"{source}:{number + 1}", text, size, self.examples)
                    continue
                html = record.get("html") if isinstance(record, dict) else None
                body = html if isinstance(html, str) else (record.get("text") if isinstance(record, dict) else None)
                if not isinstance(body, str):
                    self.summary.remove("no_html_or_text_field", f"{source}:{number + 1}", text, size,
                                        self.examples)
                    continue
                url = record.get("url")
                self.keep(source, number, body, "html" if isinstance(html, str) else "text",
                          url if isinstance(url, str) else None)

    def read_text(self, path: Path, source: str) -> None:
        with _open(path) as handle:
            lines: list[bytes] = []
            size, number, skipping = 0, 0, False
            for line, line_size in _lines(handle, self.limit):
                if line is not None and not line.strip():
                    if skipping:
                        self.too_long(source, size)
                    elif lines:
                        self.keep(source, number, _decode(b"".join(lines)).strip(), "text", None)
                    number += 1
                    lines, size, skipping = [], 0, False
                    continue
                size += line_size
                if line is None or size > self.limit:
                    skipping, lines = True, []
                    continue
                if not skipping:
                    lines.append(line)
            if skipping:
                self.too_long(source, size)
            elif lines:
                self.keep(source, number, _decode(b"".join(lines)).strip(), "text", None)

    def read(self, path: Path, fmt: str) -> None:
        source = path.name
        before = self.summary.documents
        problem = ""
        try:
            if path.stat().st_size == 0:
                problem = "empty file"
            elif fmt != "warc" and _looks_binary(path):
                problem = "binary data, not text: skipped"
                self.summary.remove("binary_file", source, "(binary data)", path.stat().st_size, self.examples)
            else:
                getattr(self, f"read_{fmt}")(path, source)
        except (OSError, EOFError, ValueError, UnicodeError) as error:
            # A truncated gzip or WARC, a corrupt record: what was read before it stays in.
            problem = f"stopped reading at a malformed part ({type(error).__name__}: {error}); the documents " \
                      "before it were kept"
        except Exception as error:  # warcio's ArchiveLoadFailed and friends have no common base we can name
            problem = f"stopped reading at a malformed part ({type(error).__name__}: {error}); the documents " \
                      "before it were kept"
        self.summary.files.append({"name": source, "format": fmt, "documents": self.summary.documents - before,
                                   "problem": problem})


def read_inputs(inputs: list[Path], shards_dir: Path, *, shard_bytes: int, max_document_bytes: int,
                examples_per_reason: int = 5) -> InputSummary:
    """Every document of `inputs` into JSONL shards in `shards_dir` (see the module docstring)."""
    summary = InputSummary()
    writer = _ShardWriter(shards_dir, shard_bytes)
    reader = _Reader(writer, summary, max_document_bytes, examples_per_reason)
    try:
        for path in input_files(inputs):
            fmt = input_format(path)
            if fmt is None:
                summary.files.append({"name": path.name, "format": "", "documents": 0,
                                      "problem": "not a format clean reads (.warc[.gz], .html, .htm, .jsonl[.gz], "
                                                 ".txt[.gz]): skipped"})
                continue
            reader.read(path, fmt)
    finally:
        writer.close()
    summary.shards = writer.names
    if summary.kept == 0:
        problems = "; ".join(f"{f['name']}: {f['problem'] or str(f['documents']) + ' documents'}"
                             for f in summary.files) or "no files"
        raise NoDocuments(f"no document to clean in the inputs ({problems}; removed: {summary.removed or 'none'})")
    return summary


def shard_size_for(inputs: list[Path], workers: int) -> int:
    """Bytes per shard: about four shards per worker, between 1 MB and 64 MB."""
    total = sum(os.path.getsize(p) for p in input_files(inputs))
    return int(min(64 << 20, max(1 << 20, total // max(1, 4 * workers))))


RAW_EXTENSIONS = ("html", "htm", "warc", "warc.gz", "arc", "arc.gz", "jsonl", "jsonl.gz", "json.gz", "txt", "txt.gz",
                  "text")


def raw_extension(filename: str) -> str | None:
    """The extension a raw upload is stored under ("warc.gz", "html", ...), the whole suffix `input_format` reads,
    or None when the name has none of them."""
    name = filename.lower()
    for extension in sorted(RAW_EXTENSIONS, key=len, reverse=True):
        if name.endswith("." + extension):
            return extension
    return None


class _Enough(BaseException):  # not an Exception: the reader's own error handling lets it through
    pass


class _Sample:
    """A shard writer stand-in that keeps the first few records and then stops the reading."""

    def __init__(self, limit: int):
        self.limit, self.records = limit, []

    def write(self, record: dict) -> None:
        self.records.append(record)
        if len(self.records) >= self.limit:
            raise _Enough


def inspect_raw(path: Path, documents: int = 5, max_document_bytes: int = 2_000_000) -> dict:
    """What an uploaded raw file holds, from its first documents: its format and a preview of each (the start of
    its text or HTML); NoDocuments when none can be read (a binary file, an empty one, lines of no format)."""
    path = Path(path)
    fmt = input_format(path)
    if fmt is None:
        raise NoDocuments(f"{path.name}: not a format clean reads (.{', .'.join(RAW_EXTENSIONS)})")
    sample, summary = _Sample(documents), InputSummary()
    reader = _Reader(sample, summary, max_document_bytes, 1)  # type: ignore[arg-type]
    try:
        reader.read(path, fmt)
    except _Enough:
        pass
    problems = [item["problem"] for item in summary.files if item["problem"]]
    if not sample.records:
        raise NoDocuments(f"no document could be read from it ({'; '.join(problems) or 'nothing in it'}"
                          f"{'; removed: ' + str(summary.removed) if summary.removed else ''})")
    return {"format": fmt, "documents_sampled": len(sample.records),
            "html_sampled": sum(record["format"] == "html" for record in sample.records),
            "preview": [record["text"][:300] for record in sample.records]}
