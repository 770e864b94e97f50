"""Train ▸ Reward model / DPO without a browser: the pair counts per source, and a submit from the form's
values reaches the worker's validation (a job with the chosen sources, or the message naming what is missing)."""

from __future__ import annotations

import html

import gradio as gr
from sqlalchemy import select

from db.models import DatasetKind, Job
from tests.conftest import TRAINER
from tests.support.records import add_base_model, add_dataset, labeled_project, preference_lines
from web.ui.train_tab import build
from worker.kinds import KINDS
from worker.kinds.reward.form import count_pairs, pair_counts_html


class FakeRequest:
    def __init__(self, username):
        self.username = username


def test_pair_counts(api_settings, users, session):
    upload = add_dataset(session, api_settings, DatasetKind.preference, preference_lines(10), "prefs")
    project = labeled_project(session)
    shown = html.unescape(count_pairs(api_settings, upload.id, [project.id], True))
    assert "12 pairs: 10 from the dataset, 2 from project 'p', 0 from arena votes" in shown
    assert "Choose where the pairs come from" in pair_counts_html(None, {}, None)


def test_submitting_the_dpo_form(api_settings, users, session):
    base = add_base_model(session, api_settings)
    project = labeled_project(session)
    with gr.Blocks() as blocks:
        tab = build(api_settings, KINDS["dpo"])
    submit = next(fn.fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "do_submit")
    inputs = next(fn.inputs for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "do_submit")
    values = {component: getattr(component, "value", None) for component in inputs}
    values[tab.inputs["model_id"]], values[tab.inputs["dataset_id"]], values[tab.inputs["project_ids"]] = \
        base.id, 0, [project.id]
    message, job_id = submit(values, FakeRequest(TRAINER[0]))
    assert job_id, message
    job = session.scalar(select(Job).where(Job.id == job_id))
    assert job.kind == "dpo" and job.params["project_ids"] == str(project.id) and job.dataset_id is None
    values[tab.inputs["project_ids"]] = []
    message, job_id = submit(values, FakeRequest(TRAINER[0]))
    assert job_id is None and "choose where the pairs come from" in message
