"""What the Label screen shows (issue 19 item 16): skips counted apart from the pairs labeled, and the answers as
the model wrote them. The browser checks (alignment, a phone's width) are in tests/e2e/test_ui_first_day_e2e.py."""

from __future__ import annotations

import html
import re

from llm.preference_labels import Choice
from tests.support.records import make_generate_job
from web.services import labeling
from web.ui.label_tab import answer_html, progress_html


def counts(bar: str) -> str:
    return re.search(r'class="wb-progress-counts"[^>]*>([^<]*)<', bar).group(1)


def test_skips_are_not_done_and_are_shown_apart():
    bar = progress_html({"done": 5, "skipped": 2, "left": 5, "today": 4, "pairs": 10, "complete_pairs": 0})
    assert counts(bar) == "3 done · 2 skipped · 5 left · 4 today"
    assert 'aria-valuenow="30"' in bar  # 3 labeled of the 10 pairs that are the labeler's
    widths = dict(re.findall(r'wb-progress-(\w+)" style="width:([\d.]+)%', bar))
    assert widths == {"labeled": "30.00", "skipped": "20.00"}
    nothing_skipped = progress_html({"done": 3, "skipped": 0, "left": 1, "today": 2, "pairs": 4, "complete_pairs": 0})
    assert counts(nothing_skipped) == "3 done · 1 left · 2 today"
    assert 'aria-valuenow="100"' in progress_html({"done": 0, "skipped": 0, "left": 0, "today": 0, "pairs": 0,
                                                   "complete_pairs": 0})


def test_an_answer_is_shown_as_text_not_markdown():
    text = "Use *stars*: 2 * 3 = 6\n# not a heading\n<b>not bold</b> & `not code`"
    shown = answer_html("A", text)
    assert html.escape(text) in shown and "<b>" not in shown and "<em>" not in shown
    assert "white-space:pre-wrap" in shown and "Answer A" in shown
    assert "No pair on screen" in answer_html("B", None)


def test_the_labelers_progress_counts_their_skips(session, users):
    job = make_generate_job(session, prompts=2, answers=2)  # 2 pairs
    project = labeling.create_project(session, users["admin"], name="p", source_job_ids=[job.id], overlap=1)
    session.commit()
    who = users["labeler"]
    first = labeling.next_pair(session, who, project.id)
    labeling.submit_label(session, who, project.id, first["pair_id"], Choice.skip, first["left"]["answer_id"])
    second = labeling.next_pair(session, who, project.id)
    stored = labeling.submit_label(session, who, project.id, second["pair_id"], Choice.left,
                                   second["left"]["answer_id"], and_next=True)
    assert {key: stored["progress"][key] for key in ("done", "skipped", "left")} == {"done": 2, "skipped": 1, "left": 0}
    assert labeling.progress(session, who, project.id)["skipped"] == 1
    assert "1 done · 1 skipped · 0 left" in progress_html(stored["progress"])
