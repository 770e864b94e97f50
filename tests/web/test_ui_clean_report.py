"""Raw web data in the Datasets tab and the clean report of a cleaned dataset: an HTML page or a WARC uploaded as kind
raw is validated from its first documents (binary junk refused with the reason), and a dataset the clean job made
shows its funnel, its table and the removed and kept examples of each step with the reason
(web/ui/clean_report_view.py, web/services/datasets.py)."""

from __future__ import annotations

import json
import random

import gradio as gr
import pytest

from llm.clean import CleanConfig, clean
from llm.synthetic_web import article_html, english_text, foreign_text
from tests.conftest import TRAINER
from web.services.common import InvalidInput
from web.services.datasets import store_dataset_upload
from web.ui import clean_report_view
from web.ui.datasets_tab import build

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class FakeRequest:
    def __init__(self, username):
        self.username = username


@SQLITE
def test_raw_web_data_uploads_are_validated_from_their_first_documents(api_settings, users, session, tmp_path):
    page = tmp_path / "news.html"
    page.write_text(article_html(random.Random(0)))
    stored = store_dataset_upload(session, api_settings, page, "news.html", None, "raw", users["trainer"])
    dataset = stored.dataset
    assert dataset.kind.value == "raw" and dataset.format == "html" and dataset.path.endswith("original.html")
    assert dataset.stats["format"] == "html" and dataset.stats["documents_sampled"] == 1
    assert "<html>" in dataset.stats["preview"][0].lower() or "<!doctype" in dataset.stats["preview"][0].lower()
    junk = tmp_path / "crawl.jsonl"
    junk.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(InvalidInput, match="crawl.jsonl: no document could be read from it.*binary"):
        store_dataset_upload(session, api_settings, junk, "crawl.jsonl", None, "raw", users["trainer"])
    with pytest.raises(InvalidInput, match="raw web data is one of"):
        store_dataset_upload(session, api_settings, page, "news.pdf", None, "raw", users["trainer"])


@pytest.fixture(scope="module")
def cleaned_report(tmp_path_factory):
    rng = random.Random(1)
    folder = tmp_path_factory.mktemp("raw")
    (folder / "pages.txt").write_text("\n\n".join([english_text(rng, 24) for _ in range(3)] + [foreign_text(rng, "fr")]))
    out = folder / "out"
    clean([folder / "pages.txt"], out, CleanConfig(minhash=False), workers=1, say=lambda line: None)
    return out


@SQLITE
def test_a_cleaned_dataset_shows_its_funnel_table_and_examples_with_reasons(api_settings, users, session,
                                                                           cleaned_report):
    relative = "cleaned/report.json"
    (api_settings.data_dir / "cleaned").mkdir(parents=True, exist_ok=True)
    (api_settings.data_dir / relative).write_text((cleaned_report / "report.json").read_text())
    dataset = {"id": 9, "stats": {"clean_report": relative,
                                  "cleaned_from": {"dataset_id": 3, "dataset_name": "crawl", "job_id": 7}}}
    box, table, funnel, reason, examples, report = clean_report_view.report_outputs(dataset, api_settings.data_dir)
    assert box.visible is True
    assert "Cleaned from dataset #3 “crawl” by job #7" in table and "| language identification | 4 | 1 |" in table
    assert funnel is not None and report["output"]["documents"] == 3
    assert reason.value == "language|removed|fr, not en"
    assert list(examples["reason"]) == ["fr, not en"] and any(word in examples["text"][0] for word in ("Le", "La"))
    kept = clean_report_view.examples_frame(report, "language|kept|kept")
    assert len(kept) == 3 and set(kept["removed or kept"]) == {"kept"}
    # Any other dataset: no report.
    hidden = clean_report_view.report_outputs({"id": 1, "stats": {}}, api_settings.data_dir)
    assert hidden[0].visible is False

    # The tab wires it to the dataset picker.
    with gr.Blocks() as blocks:
        build(api_settings)
    handlers = {fn.fn.__name__: fn.fn for fn in blocks.fns.values() if fn.fn is not None}
    assert handlers["show_report"](None, FakeRequest(TRAINER[0]))[0].visible is False
    assert json.loads((cleaned_report / "report.json").read_text())["steps"]
