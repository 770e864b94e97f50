"""Raw web data to a model in the browser (issue 22): upload HTML pages as kind raw → Train ▸ Clean at the defaults →
the clean dataset's report in Datasets (funnel, reasons, examples) → Train ▸ Pretrain on it (prepare runs inside
the job) → the model. `workbench serve` in a subprocess, headless Chromium (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import random
import re
import time

import pytest

from llm.synthetic_web import article_html, english_text, foreign_text, near_duplicate
from tests.support.browser import choose, fill_number, log_in, open_tab, text_of, wait_for_job

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def write_pages(path, pages: int = 40, seed: int = 3) -> None:
    """HTML pages as JSON lines: English articles, one near-duplicate, two French pages."""
    rng = random.Random(seed)
    records = []
    for number in range(pages):
        body = english_text(rng, 28)
        records.append({"html": article_html(rng, body), "url": f"https://site{number}.example.org/a"})
    records.append({"html": article_html(rng, near_duplicate(body, rng, 3)), "url": "https://copy.example.org/a"})
    records += [{"html": article_html(rng, foreign_text(rng, "fr")), "url": f"https://fr{i}.example.org/"}
                for i in range(2)]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def picked(page, elem_id: str, option: str) -> None:
    """Choose `option` and check it stayed chosen (opening a tab refreshes its dropdowns, late under load)."""
    page.wait_for_timeout(1500)
    for _ in range(3):
        choose(page, elem_id, option, exact=False)
        page.wait_for_timeout(500)
        if option in (page.locator(f"#{elem_id} input").first.input_value() or ""):
            return
    raise AssertionError(f"{option!r} did not stay chosen in #{elem_id}")


def submitted(page, server, prefix: str) -> int:
    page.locator(f"#{prefix}-submit").click()
    result = page.locator(f"#{prefix}-result .wb-msg-ok")
    result.wait_for(state="attached", timeout=60_000)
    job_id = int(re.search(r"Job #(\d+)", result.text_content()).group(1))
    page.get_by_role("tab", name="Jobs", exact=True).and_(page.locator("[aria-selected=true]")).wait_for()
    wait_for_job(page, server, job_id)
    return job_id


def test_raw_html_is_cleaned_reported_and_pretrained_on(server, browser, tmp_path):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    page = browser.new_context(viewport={"width": 1440, "height": 1100}).new_page()
    page.set_default_timeout(60_000)
    log_in(page, server.url, server.password)

    # --- upload raw HTML pages (kind raw): validated from their first pages
    pages = tmp_path / "crawl.jsonl"
    write_pages(pages)
    open_tab(page, "Datasets")
    page.locator("#ds-file input[type=file]").set_input_files(str(pages))
    page.locator("#ds-name input, #ds-name textarea").first.fill("crawl")
    choose(page, "ds-kind", "raw")
    page.locator("#ds-upload").click()
    page.locator("#ds-message .wb-msg-ok").filter(has_text="crawl").wait_for(timeout=60_000)

    # --- Train ▸ Clean at the defaults
    t = time.monotonic()
    open_tab(page, "Train")
    open_tab(page, "Clean")
    picked(page, "clean-dataset", "crawl")
    submitted(page, server, "clean")
    logs = page.locator("#jobs-logs textarea").input_value()
    assert "documents in" in logs, logs
    timings["clean"] = time.monotonic() - t

    # --- the clean dataset and its report in Datasets
    open_tab(page, "Datasets")
    picked(page, "ds-picker", "crawl (clean)")
    report = page.locator("#ds-clean-report")
    report.wait_for()
    table = text_of(page, "#ds-clean-table")
    assert "Cleaned from dataset" in table and "language identification" in table, table
    page.locator("#ds-clean-funnel [data-testid=matplotlib] img").wait_for()
    assert "language fr" in page.locator("#ds-clean-reason input").first.input_value() + text_of(page, "#ds-clean-table")
    assert "cookies" not in text_of(page, "#ds-preview").lower()

    # --- Train ▸ Pretrain on it (prepare runs inside the job)
    t = time.monotonic()
    open_tab(page, "Train")
    open_tab(page, "Pretrain")
    picked(page, "pt-dataset", "crawl (clean)")
    fill_number(page, "pt-max-steps", 10)
    fill_number(page, "pt-batch-size", 4)
    fill_number(page, "pt-block-size", 64)
    page.locator("#pt-name input, #pt-name textarea").first.fill("clean-base")
    submitted(page, server, "pt")
    timings["pretrain"] = time.monotonic() - t
    print("timings", {name: round(seconds, 1) for name, seconds in timings.items()},
          f"total {time.monotonic() - t0:.0f} s")
