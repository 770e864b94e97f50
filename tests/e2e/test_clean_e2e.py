"""Raw web pages to a base model in the browser (issue 22): upload HTML pages as a raw dataset → Train ▸ Clean at its
defaults → the job succeeds in Jobs → the clean dataset's report in Datasets (funnel, a removed page with its reason)
→ Train ▸ Pretrain on the clean dataset (the data is prepared, i.e. tokenized, as the job's first stage) → the Models
tab's lineage reads raw → clean job → clean dataset → pretrain job → model.

`workbench serve` in a subprocess with its real Celery worker over Redis and SQLite (tests/e2e/conftest.py), headless
Chromium. The runs are tiny: this checks that the pieces connect through the UI; what each cleaning step removes is
tested in tests/llm/test_clean_filters.py and test_clean_pipeline.py, the job layer in tests/jobs/test_clean_job.py.
Measured 09:04 at load 12-14 on the shared 2-core machine: 247 s (the clean job 31 s of it, 19 s of that waiting for
the worker's throughput probe in progress), 1 min 44 s of CPU for the whole process tree.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from sqlalchemy import select

from llm.synthetic_web import article_html, english_text, foreign_text, near_duplicate, with_pii
from tests.support.browser import fill_number, log_in, open_tab, pick, submit_and_wait, upload_dataset

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTICLES = 24
EMAIL = "anna.tester@mail-example.org"
RAW_NAME, CLEAN_NAME, MODEL_NAME = "web crawl", "web crawl (clean)", "crawl-base"


def write_pages(path, seed: int = 22) -> None:
    """HTML pages as JSON lines ({"html", "url"}), each with a menu, a cookie banner and a footer: English articles
    (one with an e-mail address and an IP), a near-duplicate of one of them (three words changed), a French page and a
    page on a blocked domain."""
    rng = random.Random(seed)
    bodies = [english_text(rng, 28) for _ in range(ARTICLES)]
    bodies[0] = with_pii(bodies[0], rng).replace("For questions write to ", f"For questions write to {EMAIL} or ")
    pages = [{"html": article_html(rng, body), "url": f"https://news{number}.example.org/story"}
             for number, body in enumerate(bodies)]
    copy = near_duplicate(bodies[5], rng, 3)
    pages.append({"html": article_html(rng, copy), "url": "https://copy.example.org/story"})
    pages.append({"html": article_html(rng, foreign_text(rng, "fr")), "url": "https://journal.example.fr/article"})
    pages.append({"html": article_html(rng, english_text(rng, 28)), "url": "https://www.example-spam.com/offer"})
    path.write_text("".join(json.dumps(page) + "\n" for page in pages), encoding="utf-8")


def database(server):
    from db.session import SessionLocal

    return SessionLocal(f"sqlite:///{server.data_dir / 'workbench.db'}")


def examples_of(page, reason: str) -> str:
    """Show the report's examples of the first reason containing `reason`; their table's text."""
    pick(page, "ds-clean-reason", reason)
    examples = page.locator("#ds-clean-examples")
    examples.filter(has_text=reason).wait_for()
    return examples.inner_text()


def test_raw_html_is_cleaned_reported_prepared_and_pretrained_on(server, browser, tmp_path):
    timings: dict[str, float] = {}
    started = time.monotonic()
    context = browser.new_context(viewport={"width": 1440, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        log_in(page, server.url, server.password)

        # --- raw HTML pages uploaded as a raw dataset
        pages = tmp_path / "crawl.jsonl"
        write_pages(pages)
        upload_dataset(page, pages, RAW_NAME, "raw")
        timings["upload"] = time.monotonic() - started

        # --- Train ▸ Clean at its defaults; the job succeeds in Jobs and its log says what came out
        step = time.monotonic()
        open_tab(page, "Train")
        open_tab(page, "Clean")
        pick(page, "clean-dataset", RAW_NAME)
        clean_job = submit_and_wait(page, server, "clean")
        log = page.locator("#jobs-logs textarea").input_value()
        assert f"{ARTICLES + 3} documents in" in log and f"{ARTICLES} out" in log, log
        timings["clean"] = time.monotonic() - step

        # --- the clean dataset's report in Datasets: where it came from, the funnel, removed pages and why
        step = time.monotonic()
        open_tab(page, "Datasets")
        pick(page, "ds-picker", CLEAN_NAME)
        page.locator("#ds-clean-report").wait_for()
        table = page.locator("#ds-clean-table")
        table.filter(has_text="Cleaned from dataset").wait_for()
        report = table.inner_text()
        assert f"“{RAW_NAME}” by job #{clean_job}" in report, report
        for shown in ("language: fr, not en", "url: domain", "minhash: near-duplicate", "Top reasons for removal"):
            assert shown.lower() in report.lower(), (shown, report)
        page.locator("#ds-clean-funnel [data-testid=matplotlib] img").wait_for()  # the funnel chart
        french = examples_of(page, "fr, not en")
        assert "journal.example.fr" in french and "removed" in french, french
        page.locator("#ds-clean-report").screenshot(path=str(server.data_dir.parent / "clean-report.png"))
        timings["report"] = time.monotonic() - step

        # What the page only shows in part: the stored corpus has no boilerplate and no e-mail, and says where it
        # came from.
        from db.models import Dataset, DatasetKind, Job, Model

        with database(server) as session:
            raw = session.scalars(select(Dataset).where(Dataset.name == RAW_NAME)).one()
            clean = session.scalars(select(Dataset).where(Dataset.name == CLEAN_NAME)).one()
            assert raw.kind == DatasetKind.raw and clean.kind == DatasetKind.text
            assert clean.stats["cleaned_from"] == {"dataset_id": raw.id, "dataset_name": RAW_NAME, "job_id": clean_job}
            assert clean.stats["documents"] == ARTICLES  # the near-duplicate's original kept
            corpus = (server.data_dir / clean.path).read_text(encoding="utf-8")
        assert EMAIL not in corpus and "@example" in corpus  # replaced by a placeholder, the sentence kept
        for boilerplate in ("We use cookies", "All rights reserved", "About us", "tracking"):
            assert boilerplate not in corpus, boilerplate

        # --- Train ▸ Pretrain on the clean dataset, a few steps (plumbing, not learning)
        step = time.monotonic()
        open_tab(page, "Train")
        open_tab(page, "Pretrain")
        pick(page, "pt-dataset", CLEAN_NAME)
        fill_number(page, "pt-max-steps", 6)
        fill_number(page, "pt-batch-size", 4)
        fill_number(page, "pt-block-size", 64)
        page.locator("#pt-name input, #pt-name textarea").first.fill(MODEL_NAME)
        timings["pretrain form"] = time.monotonic() - step
        pretrain_job = submit_and_wait(page, server, "pt")
        log = page.locator("#jobs-logs textarea").input_value()
        assert f"preparing dataset {clean.id} with tokenizer" in log and "tokens" in log, log
        timings["prepare and pretrain"] = time.monotonic() - step

        # --- the model's lineage in Models: raw → clean job → clean dataset → pretrain job → model
        step = time.monotonic()
        open_tab(page, "Models")
        pick(page, "models-picker", MODEL_NAME)
        lineage_text = page.locator("#models-lineage-text")
        lineage_text.filter(has_text="Lineage as text").wait_for()
        lineage_text.locator("summary").click()
        lineage = lineage_text.inner_text()
        for edge in (f"{RAW_NAME} (raw) → job #{clean_job} clean",
                     f"job #{clean_job} clean → {CLEAN_NAME} (text)",
                     f"{CLEAN_NAME} (text) → job #{pretrain_job} pretrain",
                     f"job #{pretrain_job} pretrain → {MODEL_NAME} (base)"):
            assert edge in lineage, (edge, lineage)
        page.locator("#models-lineage img").first.wait_for()  # the graph drawn
        with database(server) as session:
            model = session.scalars(select(Model).where(Model.name == MODEL_NAME)).one()
            assert session.get(Job, model.job_id).dataset_id == clean.id
        timings["lineage"] = time.monotonic() - step
        timings["total"] = time.monotonic() - started
        print("clean e2e timings (s):", {name: round(seconds, 1) for name, seconds in timings.items()})
    except Exception:
        page.screenshot(path=str(tmp_path / "clean-failure.png"), full_page=True)
        print(f"failure screenshot: {tmp_path / 'clean-failure.png'}")
        print(server.log()[-3000:])
        raise
    finally:
        context.close()
