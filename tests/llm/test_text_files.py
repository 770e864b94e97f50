"""llm.text_files and the bounded readers of llm.corpus, one piece at a time: what a non-UTF-8 file is
called, JSON lines that would crash json.loads, and the decoded-size and document-length limits."""

from __future__ import annotations

import pytest

import llm.corpus as corpus
import llm.text_files as text_files
from llm.corpus import CorpusError, iter_documents
from llm.text_files import JsonLineError, TextFileProblem, check_text_file, parse_json_line


@pytest.mark.parametrize("content, expected, line", [
    (b"\x7fELF\x02\x01\x01" + bytes(50), "binary file (a Linux program)", None),
    (b"PK\x03\x04rest", "a zip archive", None),
    (b"line one\nline two\x00\x01", "a NUL byte at byte offset 17", 2),
    ("\ufeffhello".encode("utf-16-be"), "UTF-16", None),
    ("hello world, plain".encode("utf-16-le"), "UTF-16", None),
    ("a\nb\nna\u00efve".encode("cp1252"), "byte 0xEF at column 3", 3),
])
def test_sniff_names_what_the_file_is(tmp_path, content, expected, line):
    path = tmp_path / "f.txt"
    path.write_bytes(content)
    with pytest.raises(TextFileProblem) as caught:
        check_text_file(path)
    assert expected in caught.value.problem and caught.value.line == line


def test_utf8_text_cut_by_a_block_boundary_is_accepted(tmp_path):
    path = tmp_path / "f.txt"
    # "é" and a 4-byte emoji split by the end of the first block and of the second one.
    path.write_bytes(b"a" * (text_files.SNIFF_BYTES - 1) + "\u00e9 and more".encode()
                     + b"b" * (text_files.READ_BYTES - len(" and more") - 2) + "\U0001f600 end".encode())
    check_text_file(path)


MB = 1024 * 1024


@pytest.mark.parametrize("bad, expected, at", [
    (b"caf\xe9 cr\xe8me", "byte 0xE9 at column 4 (byte offset {offset:,})", 3),
    (b"text\x00\x01\x02", "a NUL byte at byte offset {offset:,}", 4),
    (bytes(range(1, 9)) * 20_000, "control bytes in a block of", None),
])
def test_a_file_that_turns_bad_at_one_megabyte_is_refused_naming_the_line_and_byte(tmp_path, bad, expected, at):
    line = b"a line of plain text, sixty-three bytes long, for a corpus file\n"
    good = (line * (MB // len(line) + 1))[:MB - 1] + b"\n"  # exactly 1 MB of text lines
    path = tmp_path / "turns.txt"
    path.write_bytes(good + bad + b"\nmore text\n")
    with pytest.raises(TextFileProblem) as caught:
        check_text_file(path)
    problem = caught.value.problem
    assert caught.value.line == good.count(b"\n") + 1, problem
    if at is not None:
        assert expected.format(offset=MB + at) in problem, problem
    else:  # the block where control bytes pass a tenth of it: the first of them lies in the binary part
        assert expected in problem, problem
        first = int(problem.rsplit("byte offset ", 1)[1].rstrip(")").replace(",", ""))
        assert MB <= first < MB + len(bad), problem


def test_the_whole_file_is_checked_in_bounded_memory(tmp_path):
    """A 64 MB file is read a block at a time: the check's peak allocation stays near one block."""
    import tracemalloc

    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        for _ in range(64):
            handle.write(b"plain text line\n" * (MB // 16))
    tracemalloc.start()
    try:
        check_text_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MB, peak


def test_json_lines_that_would_crash_json_loads_are_errors():
    with pytest.raises(JsonLineError, match="nested more than 32"):
        parse_json_line("[" * 100_000)
    with pytest.raises(JsonLineError, match=r"field 'n': a number with 5,001 digits at column 7"):
        parse_json_line('{"n": ' + "1" * 5001 + "}")
    with pytest.raises(JsonLineError) as caught:
        parse_json_line('{"a": tru}')
    assert caught.value.syntax is not None
    assert parse_json_line('{"s": "' + "[" * 100 + '"}') == {"s": "[" * 100}  # brackets in strings do not nest


def test_plain_parquet_over_the_decoded_budget_is_refused_from_its_metadata(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"document {i} " * 50 for i in range(2000)]}), path, use_dictionary=False,
                   compression="zstd")
    monkeypatch.setattr(text_files, "MIN_DECODED_BUDGET", 0)
    monkeypatch.setattr(text_files, "MAX_EXPANSION_RATIO", 2)
    with pytest.raises(CorpusError, match="decompression bomb"):
        next(iter_documents(path))


def test_csv_field_and_jsonl_line_over_the_limit(tmp_path, monkeypatch):
    import csv

    previous = csv.field_size_limit()
    monkeypatch.setattr(corpus, "MAX_DOCUMENT_CHARS", 100)
    monkeypatch.setattr(corpus, "JSONL_LINE_CHARS", 200)
    csv_path = tmp_path / "c.csv"
    csv_path.write_text('text\n"short"\n"' + "z" * 500 + '"\n')
    try:
        with pytest.raises(CorpusError, match=r"c\.csv, line 3: a field is longer than 100"):
            list(iter_documents(csv_path))
    finally:
        csv.field_size_limit(previous)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "ok"}\n{"text": "' + "z" * 500 + '"}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl, line 2: the line is longer than 200"):
        list(iter_documents(jsonl))
