"""`clean` end to end (llm/clean.py on datatrove's LocalPipelineExecutor): one run over every input format with
near-duplicates, another language, spam, PII, HTML boilerplate and malformed files (a truncated WARC, binary junk, an
empty file, a 50 MB single line, broken HTML, a bad JSON line) must keep what FineWeb keeps, count what it removes
with the reason, and never stop for one bad file; the report adds up; a run that dies in a task resumes with only the
unfinished tasks; a stop request stops it."""

from __future__ import annotations

import io
import json
import random

import pytest

from llm.clean import CleanConfig, CleanStoppedRun, NoDocuments, clean
from llm.clean_report import report_markdown
from llm.synthetic_web import COOKIE, FOOTER, article_html, english_text, foreign_text, near_duplicate, spam_text

pytestmark = pytest.mark.slow  # whole pipeline runs (spaCy's tokenizer loads in a few seconds)


def write_warc(path, pages: list[tuple[str, str]], truncate_at: float | None = None) -> None:
    """A WARC of HTML responses (warcio), optionally cut off at a share of its bytes."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for url, html in pages:
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        record = writer.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=headers)
        writer.write_record(record)
    data = buffer.getvalue()
    path.write_bytes(data[:int(len(data) * truncate_at)] if truncate_at else data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder of raw inputs and what each English article says (its first sentence)."""
    rng = random.Random(7)
    folder = tmp_path_factory.mktemp("raw")
    articles = [english_text(rng, 28) for _ in range(6)]
    records = [{"html": article_html(rng, articles[0]), "url": "https://one.example.org/a"},
               {"html": article_html(rng, near_duplicate(articles[0], rng, 3)), "url": "https://two.example.org/b"},
               {"html": article_html(rng, articles[1] + "\nContact me at jane.doe@company.com or 8.8.4.4."),
                "url": "https://three.example.org/c"},
               {"html": article_html(rng, foreign_text(rng, "fr")), "url": "https://fr.example.org/d"},
               {"html": article_html(rng, spam_text(rng)), "url": "https://shop.example.org/e"},
               {"html": article_html(rng, articles[2]), "url": "https://www.example-spam.com/f"},
               {"text": articles[3]},
               {"html": "<html><body><div><p>broken <b>page &amp <<>><table>", "url": "https://broken.example.org/"}]
    lines = [json.dumps(record) for record in records]
    lines.insert(3, "{this is not json")
    (folder / "pages.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "page.html").write_text(article_html(rng, articles[4]))
    write_warc(folder / "crawl.warc.gz", [(f"https://warc.example.org/{i}", article_html(rng, text))
                                       for i, text in enumerate([articles[5], english_text(rng, 28),
                                                                 english_text(rng, 28)])], truncate_at=0.7)
    junk = random.Random(1)
    (folder / "junk.txt").write_bytes(bytes(junk.randrange(256) for _ in range(20_000)))
    (folder / "empty.txt").write_bytes(b"")
    with open(folder / "one-line.txt", "wb") as handle:  # a 50 MB single line
        chunk = b"word " * 200_000
        for _ in range(50):
            handle.write(chunk)
    return folder, articles


@pytest.fixture(scope="module")
def cleaned(corpus, tmp_path_factory):
    folder, articles = corpus
    out = tmp_path_factory.mktemp("clean")
    progress = []
    report = clean([folder], out, workers=1, say=lambda line: None, on_progress=lambda f, n: progress.append(f))
    texts = [json.loads(line)["text"] for line in (out / "clean.jsonl").read_text().splitlines()]
    return report, texts, progress, out


def test_clean_keeps_distinct_english_pages_and_removes_near_duplicates_languages_spam_and_blocked_urls(
        corpus, cleaned):
    _, articles = corpus
    report, texts, _, _ = cleaned
    joined = "\n".join(texts)

    def kept(article: str) -> int:
        return sum(article.split("\n")[0][:80] in text for text in texts)

    # One of the two near-duplicates (3 words changed) is kept; the distinct articles all are.
    first_lines = articles[0].split("\n")[0][:80]
    assert sum(first_lines in text or near_duplicate(articles[0], random.Random(0), 0)[:80] in text
               for text in texts) == 1
    assert [kept(articles[i]) for i in (1, 3, 4, 5)] == [1, 1, 1, 1]
    assert kept(articles[2]) == 0  # on the shipped block list
    steps = {step["step"]: step for step in report["steps"]}
    assert steps["minhash"]["removed"] == {"near-duplicate": 1}
    assert steps["language"]["removed"].get("fr, not en") == 1
    assert steps["url"]["removed"] == {"domain": 1}
    assert sum(steps["gopher_repetition"]["removed"].values()) >= 1  # the spam page
    # HTML boilerplate is gone, PII replaced.
    for boilerplate in (COOKIE[:30], FOOTER[:30], "Most read", "var tracking"):
        assert boilerplate not in joined
    assert "jane.doe@company.com" not in joined and "8.8.4.4" not in joined and "@example" in joined
    assert steps["pii"]["documents_changed"] == 1


def test_malformed_inputs_are_counted_and_named_never_the_end_of_the_run(cleaned):
    report, texts, _, _ = cleaned
    source = report["input"]
    assert source["removed"]["malformed_json"] == 1
    assert source["removed"]["too_long"] == 1  # the 50 MB line
    assert source["removed"]["binary_file"] == 1
    problems = {item["name"]: item["problem"] for item in source["files"]}
    assert "binary" in problems["junk.txt"]
    assert problems["empty.txt"] == "empty file"
    # The WARC cut off in its third record: the pages before the cut are read.
    assert [f["documents"] for f in source["files"] if f["name"] == "crawl.warc.gz"] == [2]
    assert "word word" not in "\n".join(texts)


def test_the_report_adds_up_and_has_examples_and_reasons(cleaned):
    report, texts, progress, out = cleaned
    steps = report["steps"]
    for before, after in zip(steps, steps[1:]):
        assert after["documents_in"] == before["documents_out"]
    for step in steps:
        assert step["documents_in"] - step["documents_out"] == sum(step["removed"].values()), step["step"]
        if step["removed"]:
            assert step["removed_examples"] and all(e["reason"] in step["removed"] for e in step["removed_examples"])
    assert report["output"]["documents"] == len(texts) == steps[-1]["documents_out"]
    assert [entry["documents"] for entry in report["funnel"]] == sorted(
        (entry["documents"] for entry in report["funnel"]), reverse=True)
    # The chart names its bars as the table names its rows.
    assert [entry["title"] for entry in report["funnel"][2:]] == [step["title"] for step in steps if step["ran"]]
    language = next(step for step in steps if step["step"] == "language")
    assert language["removed_examples"][0]["language"].startswith("fr")
    assert language["kept_examples"] and report["top_reasons"]
    assert "| language identification |" in report_markdown(report)
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert json.loads((out / "report.json").read_text())["summary"] == report["summary"]
    assert not (out / "work" / "removed").exists()  # exclusion files are removed unless keep_removed


def test_inputs_without_any_document_are_a_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "junk.jsonl").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(NoDocuments, match="no document to clean.*empty.txt: empty file.*junk.jsonl: binary"):
        clean([tmp_path], tmp_path / "out", workers=1, say=lambda line: None)


def test_a_run_that_dies_in_a_task_resumes_with_only_the_unfinished_tasks(tmp_path, monkeypatch):
    import llm.clean_blocks as blocks

    rng = random.Random(3)
    with open(tmp_path / "pages.jsonl", "w") as handle:
        for i in range(6):
            handle.write(json.dumps({"text": english_text(rng, 24), "url": f"https://e{i}.example.org/"}) + "\n")
    config = CleanConfig(minhash=False)
    original = blocks.Watch.run

    def dies_in_task_2(self, data, rank=0, world_size=1):
        if rank == 2:
            raise RuntimeError("worker killed")
        yield from original(self, data, rank, world_size)

    monkeypatch.setattr(blocks.Watch, "run", dies_in_task_2)
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="the filter stage failed.*resume"):
        clean([tmp_path / "pages.jsonl"], tmp_path / "out", config, workers=1, shard_bytes=3000, say=lines.append)
    shards = len(list((tmp_path / "out" / "work" / "shards").glob("*.jsonl")))
    assert shards >= 3
    monkeypatch.setattr(blocks.Watch, "run", original)
    lines.clear()
    report = clean([tmp_path / "pages.jsonl"], tmp_path / "out", config, workers=1, shard_bytes=3000,
                   say=lines.append)
    assert any(line.startswith("read: done before") for line in lines)
    assert f"filter: {shards} tasks (2 already done, skipped)" in lines
    assert report["output"]["documents"] == 6


def test_a_stop_request_stops_the_run_and_a_new_run_finishes_it(tmp_path):
    rng = random.Random(4)
    (tmp_path / "a.txt").write_text("\n\n".join(english_text(rng, 24) for _ in range(3)))
    with pytest.raises(CleanStoppedRun):
        clean([tmp_path / "a.txt"], tmp_path / "out", workers=1, should_stop=lambda: True, say=lambda line: None)
    assert not (tmp_path / "out" / "clean.jsonl").exists()
    report = clean([tmp_path / "a.txt"], tmp_path / "out", workers=1, say=lambda line: None)
    assert report["output"]["documents"] == 3


def test_the_stages_run_on_an_executor_of_ones_own_and_clean_then_only_assembles(tmp_path):
    """What docs/clean.md does on Slurm, here on datatrove's local executor: read_stage, every datatrove_stages
    stage, then `clean` on the same folder finds every task complete and writes the corpus and the report."""
    from datatrove.executor import LocalPipelineExecutor

    from llm.clean import datatrove_stages, read_stage

    rng = random.Random(6)
    (tmp_path / "a.txt").write_text("\n\n".join(english_text(rng, 24) for _ in range(4)))
    out, config = tmp_path / "out", CleanConfig()
    summary = read_stage([tmp_path / "a.txt"], out, config, shard_bytes=4000)
    for name, steps, tasks in datatrove_stages(config, out, len(summary.shards)):
        LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=1, logging_dir=str(out / "work" / "logs" / name)).run()
    lines: list[str] = []
    report = clean([tmp_path / "a.txt"], out, config, workers=1, say=lines.append)
    assert report["output"]["documents"] == 4
    assert any(line.startswith("read: done before") for line in lines)
    assert f"filter: {len(summary.shards)} tasks ({len(summary.shards)} already done, skipped)" in lines
