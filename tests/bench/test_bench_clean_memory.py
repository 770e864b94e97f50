"""bench/clean_memory.py's cheap parts: the input it writes (size, what every stage gets to remove) and the process
tree sampler (it sees a child's memory, not only the process it was given)."""

import json
import subprocess
import sys
import time

from bench.clean_memory import TreeSampler, measure, write_input


def test_text_input_reaches_the_size_and_gives_every_stage_work(tmp_path):
    path = tmp_path / "texts.jsonl"
    size, documents = write_input(path, 0.3)
    assert path.stat().st_size == size
    assert 300_000 <= size < 320_000
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == documents
    assert all(record["text"] and "html" not in record for record in records)
    texts = " ".join(record["text"] for record in records)
    assert any("/copy/" in record["url"] for record in records)           # near-duplicates for MinHash
    assert "@mail-example.org" in texts                                   # PII
    assert " le " in texts or " der " in texts                            # French or German for the language step
    assert any(record["text"].startswith("Buy ") for record in records)   # spam for the repetition rules
    assert write_input(tmp_path / "again.jsonl", 0.3) == (size, documents)  # the same input each time


def test_html_input_is_pages(tmp_path):
    size, documents = write_input(tmp_path / "pages.jsonl", 0.1, html=True)
    records = [json.loads(line) for line in (tmp_path / "pages.jsonl").read_text().splitlines()]
    assert size >= 100_000 and len(records) == documents
    assert sum("html" in record for record in records) > documents / 2


def test_sampler_counts_a_childs_memory_in_the_tree(tmp_path):
    # A parent that starts a child holding 80 MB; the sampler is given the parent only.
    child = "b = bytearray(80 * 2**20); import time; time.sleep(3)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    process = subprocess.Popen([sys.executable, "-c", parent])
    with TreeSampler(process.pid, interval=0.1) as sampler:
        sampler.enter("filter")
        process.wait()
        time.sleep(0.2)
    figures = sampler.figures()
    assert figures["most_processes"] == 2
    assert figures["peak_largest_process_rss_mb"] >= 80
    assert figures["peak_tree_rss_mb"] > figures["peak_largest_process_rss_mb"]
    assert figures["per_stage_mb"]["filter"]["largest_process_rss"] >= 80
    assert figures["vm_hwm_mb"][0][0] >= 80


def test_no_filters_sends_every_document_to_the_minhash_stages(tmp_path):
    # `--no-filters` measures the MinHash and PII stages at the input's whole size: nothing may be removed before them
    # (the French, spam and menu records the filters would take reach MinHash), and they must still do their work.
    corpus = tmp_path / "texts.jsonl"
    _, documents = write_input(corpus, 0.3)
    figures = measure(corpus, tmp_path / "out", workers=1, interval=0.1, filters=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    removed_by = {step["step"]: sum(step["removed"].values()) for step in report["steps"] if step["removed"]}
    assert list(removed_by) == ["minhash"] and removed_by["minhash"] > 0    # the near-duplicate copies, nothing else
    assert [step["step"] for step in report["steps"] if step["ran"]] == ["minhash", "pii"]
    assert figures["documents_in"] == documents
    assert figures["documents_out"] == documents - removed_by["minhash"]
    kept = (tmp_path / "out" / "clean.jsonl").read_text()
    assert " le " in kept or " der " in kept                                # what the language step would remove
    assert set(figures["per_stage_mb"]) >= {"signatures", "finish"}          # the sampler saw the MinHash stages
