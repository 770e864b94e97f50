"""Tests for llm/corpus.py: every format, every error message, cleaning counts, PII scrubbing."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm import corpus
from llm.corpus import CleaningStats, CorpusError, inspect_corpus, iter_documents, scrub_personal_data


def read_all(path, **kwargs):
    stats = CleaningStats()
    return list(iter_documents(path, stats, **kwargs)), stats


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- formats

def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    # \r\n endings, several blank lines, a whitespace-only line, a BOM, a trailing newline.
    path.write_bytes("\ufeffFirst doc\r\nstill first\r\n\r\n\r\nSecond doc\n  \t\nThird doc\n".encode())
    documents, stats = read_all(path)
    assert documents == ["First doc\nstill first", "Second doc", "Third doc"]
    assert stats.documents == 3 and stats.empty_removed == 0


def test_txt_without_blank_lines_is_one_document(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("line one\nline two\nline three\n")
    assert read_all(path)[0] == ["line one\nline two\nline three"]


@settings(max_examples=40, deadline=None)
@given(documents=st.lists(st.text(st.sampled_from("ab \n\r\t"), min_size=1, max_size=12), max_size=12),
       separators=st.lists(st.sampled_from(["\n\n", "\n \n", "\r\n\r\n", "\n\t\n\n"]), min_size=12, max_size=12),
       read_chars=st.integers(1, 9))
def test_txt_streaming_gives_the_same_documents_whatever_the_read_size(tmp_path_factory, documents, separators,
                                                                      read_chars):
    path = tmp_path_factory.mktemp("txt") / "corpus.txt"
    path.write_bytes("".join(d + s for d, s in zip(documents, separators)).encode())
    # The whole file split at once is the reference the chunked reader must reproduce.
    whole = path.read_bytes().decode().replace("\r\n", "\n").replace("\r", "\n")
    # Pieces are compared stripped: a read boundary inside a run of blank lines may leave some of
    # that whitespace on the next document, which cleaning strips anyway.
    expected = [piece.strip() for piece in re.split(r"\n(?:[ \t]*\n)+", whole) if piece.strip()]
    original = corpus.TXT_READ_CHARS
    corpus.TXT_READ_CHARS = read_chars
    try:
        assert [piece.strip() for piece in corpus._read_txt(path)] == expected
    finally:
        corpus.TXT_READ_CHARS = original


def test_jsonl_reads_text_fields_and_skips_blank_lines(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "alpha", "id": 1}\n\n{"text": "beta\\r\\nline"}\n   \n{"text": "gamma"}')
    documents, stats = read_all(path)
    assert documents == ["alpha", "beta\nline", "gamma"]
    assert stats.bytes == len("alpha") + len("beta\nline") + len("gamma")


def test_csv_handles_quoted_multiline_fields_and_any_column_position(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('id,text,source\n1,"first, with comma",web\n2,"multi\nline ""quoted""",book\n\n3,plain,x\n',
                    newline="")
    assert read_all(path)[0] == ["first, with comma", 'multi\nline "quoted"', "plain"]


def test_csv_fields_longer_than_the_csv_module_default_limit(tmp_path):
    long_text = "word " * 40_000  # 200 KB, above csv's default 128 KiB field limit
    path = tmp_path / "data.csv"
    path.write_text(f'text\n"{long_text}"\n')
    assert read_all(path)[0] == [long_text.strip()]


def test_parquet_reads_across_batches_and_counts_nulls_as_empty(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "PARQUET_BATCH_ROWS", 3)
    texts = [f"document {i}" for i in range(10)] + [None]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": list(range(11)), "text": texts}), path, row_group_size=4)
    documents, stats = read_all(path)
    assert documents == texts[:10]
    assert stats.empty_removed == 1


def test_extension_is_case_insensitive(tmp_path):
    path = write_jsonl(tmp_path / "CORPUS.JSONL", [{"text": "x"}])
    assert read_all(path)[0] == ["x"]


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("content, line, problem", [
    ('{"text": "ok"}\n{"text": "ok2"}\n{"text" "x"}\n', 3, "invalid JSON (Expecting ':' delimiter)"),
    ('{"text": "ok"}\n["a", "b"]\n', 2, "expected a JSON object, got an array"),
    ('{"body": "x", "id": 3}\n', 1, "no 'text' field (fields: body, id)"),
    ('{"text": "ok"}\n\n{"text": 5}\n', 3, "'text' must be a string, got a number"),
    ('{"text": null}\n', 1, "'text' must be a string, got null"),
])
def test_jsonl_errors_name_file_line_and_problem(tmp_path, content, line, problem):
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(CorpusError) as caught:
        read_all(path)
    error = caught.value
    assert (error.file, error.line, error.problem) == ("corpus.jsonl", line, problem)
    assert str(error) == f"corpus.jsonl, line {line}: {problem}"
    assert isinstance(error, ValueError)


def test_csv_missing_column_error(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(CorpusError) as caught:
        read_all(path)
    assert str(caught.value) == "data.csv: no 'text' column (columns: a, b)"
    assert caught.value.line is None


def test_csv_short_row_reports_the_line_where_the_row_starts(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('id,text\n1,"two\nlines"\n3\n', newline="")
    with pytest.raises(CorpusError) as caught:
        read_all(path)
    assert (caught.value.line, caught.value.problem) == (4, "row has 1 field(s), but 'text' is column 2")


def test_csv_unclosed_quote_is_an_error_not_a_swallowed_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text\nfine\n"never closed\nmore\n')
    with pytest.raises(CorpusError, match=r"data\.csv, line \d+: malformed CSV"):
        read_all(path)


def test_empty_csv_is_an_error(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("")
    with pytest.raises(CorpusError, match="empty file"):
        read_all(path)


def test_parquet_errors(tmp_path):
    no_text = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"]}), no_text)
    with pytest.raises(CorpusError, match=r"^a\.parquet: no 'text' column \(columns: body\)$"):
        read_all(no_text)
    numbers = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    with pytest.raises(CorpusError, match=r"^b\.parquet: column 'text' has type int64, expected strings$"):
        read_all(numbers)
    garbage = tmp_path / "c.parquet"
    garbage.write_bytes(b"this is not parquet")
    with pytest.raises(CorpusError, match=r"^c\.parquet: not a readable Parquet file"):
        read_all(garbage)


def test_unknown_extension_is_an_error(tmp_path):
    path = tmp_path / "notes.docx"
    path.write_text("hello")
    with pytest.raises(CorpusError, match=r"^notes\.docx: unknown format '\.docx'"):
        read_all(path)


# ----------------------------------------------------------------------------- cleaning

def test_undecodable_documents_are_dropped_and_counted(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"good one\n\nbad \xff\xfe bytes\n\ngood two")
    assert read_all(txt)[0] == ["good one", "good two"]
    assert read_all(txt)[1].undecodable_removed == 1

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_bytes(b'{"text": "fine"}\n{"text": "bad \xc3\x28"}\n{"text": "lone \\ud800 escape"}\n')
    documents, stats = read_all(jsonl)
    assert documents == ["fine"] and stats.undecodable_removed == 2

    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes(b'text\n"ok"\n"broken \x80"\n')
    documents, stats = read_all(csv_path)
    assert documents == ["ok"] and stats.undecodable_removed == 1


def test_empty_and_duplicate_documents_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"text": "hello"}, {"text": "   "}, {"text": "  hello\n"}, {"text": ""}, {"text": "world"},
        {"text": "hello\r\n"}, {"text": "world"},
    ])
    documents, stats = read_all(path)
    assert documents == ["hello", "world"]
    assert (stats.documents, stats.empty_removed, stats.duplicates_removed) == (2, 2, 3)
    assert stats.bytes == 10


def test_nfc_normalisation_makes_composed_and_decomposed_text_equal(tmp_path):
    decomposed = "cafe\u0301"  # e + combining acute accent
    composed = "caf\u00e9"
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": decomposed}, {"text": composed}])
    documents, stats = read_all(path)
    assert documents == [composed]
    assert stats.duplicates_removed == 1
    assert stats.bytes == len(composed.encode("utf-8"))


def test_inspect_corpus_summary(tmp_path):
    long_document = "x" * 800
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in
                                               ["a", long_document, "bb", "a", "", "ccc", "dddd"]])
    summary = inspect_corpus(path, preview=2)
    assert summary == {
        "format": "jsonl", "documents": 5, "bytes": 1 + 800 + 2 + 3 + 4, "empty_removed": 1,
        "duplicates_removed": 1, "undecodable_removed": 0,
        "preview": ["a", "x" * 500], "document_lengths": [1, 800, 2, 3, 4],
    }
    assert inspect_corpus(path, max_lengths=3)["document_lengths"] == [1, 800, 2]


def test_inspect_corpus_rejects_a_corpus_with_nothing_left(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(CorpusError, match=r"no documents left after cleaning \(2 empty"):
        inspect_corpus(path)


# ----------------------------------------------------------------------------- personal data

@pytest.mark.parametrize("text, expected", [
    ("write to jane.doe+news@mail.example.co.uk today", "write to <email> today"),
    ("call +1 555-123-4567.", "call <phone>."),
    ("or (555) 123-4567, thanks", "or <phone>, thanks"),
    ("London +44 20 7946 0958", "London <phone>"),
    ("dots 555.123.4567 work", "dots <phone> work"),
])
def test_scrub_personal_data_replaces_emails_and_phones(text, expected):
    assert scrub_personal_data(text) == expected


@pytest.mark.parametrize("text", [
    "on 2024-01-15 at 10:30", "server 192.168.100.200", "population 1.234.567.890",
    "in 1999 there were 25,000,000 people", "version 3.11.4", "@handle and a@b",
])
def test_scrub_personal_data_leaves_ordinary_numbers_alone(text):
    assert scrub_personal_data(text) == text


def test_scrub_flag_applies_before_deduplication(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "mail a.b@example.com"}, {"text": "mail c.d@example.org"}])
    documents, stats = read_all(path, scrub_pii=True)
    assert documents == ["mail <email>"] and stats.duplicates_removed == 1
