"""The Jobs tab without a browser, for the not-learning warning and the range test: a finished job whose run was
not learning shows its warning as a notice (not an error), and its model's report card has it as a row; an
`lr_find` job's chart is the loss against log10 of the learning rate with the smoothed curve and the suggestion's
marker, and its card names the suggested rate; the Train tab offers the kind from its declaration."""

from __future__ import annotations

import math

import gradio as gr
import pytest

from db.models import Job, JobStatus, Metric, ModelKind
from tests.conftest import TRAINER
from tests.support.records import add_model, make_job
from web.ui.plots import metrics_frame_along

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
OUTPUTS = ("selected", "seen", "queue", "picker", "header", "cards", "loss", "second", "error", "logs", "params",
           "cancel", "resume", "history", "name", "rename", "remove", "compare")
WARNING = ("not learning: loss 10.82 → 10.81 after 5 of 20 steps: the learning rate 1e-07 may be too small for this "
           "model (the loss barely moved); try 10x (1e-06), or run `workbench lr-find` to pick one")


class FakeRequest:
    def __init__(self, username):
        self.username = username


@pytest.fixture
def select_job(api_settings, users):
    """The Jobs tab's `select_job` handler: (job id) -> its outputs by name."""
    from web.ui import jobs_tab as module

    with gr.Blocks() as blocks:
        module.build(api_settings)
    handler = next(fn.fn for fn in blocks.fns.values() if fn.fn is not None and fn.fn.__name__ == "select_job")
    return lambda job_id: dict(zip(OUTPUTS, handler(job_id, {}, FakeRequest(TRAINER[0]))))


def set_kind(session, job_id: int, kind: str, params: dict, **values) -> None:
    job = session.get(Job, job_id)
    job.kind, job.params = kind, params
    for name, value in values.items():
        setattr(job, name, value)
    session.commit()


@SQLITE_ONLY
def test_a_run_that_was_not_learning_shows_its_warning_as_a_notice(select_job, session, users):
    job_id = make_job(session, users["trainer"], status=JobStatus.succeeded, progress=1.0)
    set_kind(session, job_id, "sft", {"max_steps": 20, "lr": 1e-7}, error=WARNING)
    notice = select_job(job_id)["error"]
    assert "not learning" in notice and "try 10x (1e-06)" in notice and "workbench lr-find" in notice
    assert "warn" in notice  # a warning on a job that succeeded, not an error


@SQLITE_ONLY
def test_a_model_from_a_run_that_was_not_learning_says_so_on_its_report_card(api_settings, session, users):
    from llm.learning_watch import save_verdict
    from web.services.lineage import report_card

    job_id = make_job(session, users["trainer"], status=JobStatus.succeeded, progress=1.0)
    set_kind(session, job_id, "sft", {"max_steps": 20, "lr": 1e-7})
    model_id = add_model(session, api_settings, users["trainer"], "slow-learner", ModelKind.sft, job_id=job_id)
    assert "learning watch" not in dict(report_card(api_settings, model_id, session))
    run_dir = api_settings.data_dir / "runs" / str(job_id)
    run_dir.mkdir(parents=True)
    save_verdict(run_dir, {"kind": "too_small", "warning": WARNING})  # what llm.train leaves in the run directory
    assert dict(report_card(api_settings, model_id, session))["learning watch"] == WARNING


def range_test_metrics(job_id: int) -> list[Metric]:
    """What an lr_find job records: lr and loss each step, then the smoothed loss, the suggestion and its marker."""
    rows = []
    losses = [6.0] * 10 + [6.0 - 0.5 * i for i in range(1, 9)] + [4.0, 9.0]
    for step, loss in enumerate(losses, start=1):
        lr = 1e-7 * 10 ** (7 * (step - 1) / 19)
        rows += [Metric(job_id=job_id, step=step, name=name, value=value)
                 for name, value in (("lr", lr), ("loss", loss), ("smoothed_loss", loss))]
    rows += [Metric(job_id=job_id, step=15, name="suggested_marker", value=6.0),
             Metric(job_id=job_id, step=16, name="suggested_marker", value=2.0),
             Metric(job_id=job_id, step=20, name="suggested_lr", value=1.0e-3)]
    return rows


@SQLITE_ONLY
def test_an_lr_find_job_charts_the_loss_against_the_learning_rate_with_the_suggestion_marked(select_job, session,
                                                                                             users):
    job_id = make_job(session, users["trainer"], status=JobStatus.succeeded, progress=1.0)
    set_kind(session, job_id, "lr_find", {"steps": 20, "dataset_id": 1})
    session.add_all(range_test_metrics(job_id))
    session.commit()
    shown = select_job(job_id)
    chart = shown["loss"].constructor_args
    assert chart["visible"] is True and chart["x_title"].startswith("learning rate (log10")
    columns, data = chart["value"]["columns"], chart["value"]["data"]
    points = [dict(zip(columns, row)) for row in data]
    loss = sorted((p["step"], p["value"]) for p in points if p["series"] == "loss")
    assert loss[0][0] == pytest.approx(-7) and loss[-1][0] == pytest.approx(0)  # x is log10 of the rate
    assert chart["x_lim"] == [pytest.approx(-7), pytest.approx(0)]
    marker = [p for p in points if p["series"] == "suggested rate"]
    assert len(marker) == 2 and abs(marker[0]["step"] - marker[1]["step"]) < 0.5  # a near-vertical line
    assert {p["series"] for p in points} == {"loss", "smoothed", "suggested rate"}
    assert "suggested rate" in shown["cards"] and "1.00e-03" in shown["cards"]
    assert shown["second"].constructor_args.get("visible") is not True  # one chart only


def test_a_frame_against_another_metric_skips_steps_without_it():
    records = [{"step": 1, "name": "lr", "value": 1e-3}, {"step": 1, "name": "loss", "value": 5.0},
               {"step": 2, "name": "loss", "value": 4.0}, {"step": 3, "name": "lr", "value": 0.0},
               {"step": 3, "name": "loss", "value": 3.0}]
    frame = metrics_frame_along(records, {"loss": "loss"}, "lr", log_x=True)
    assert frame["step"].tolist() == [pytest.approx(math.log10(1e-3))] and frame["value"].tolist() == [5.0]


def test_the_train_tab_offers_the_range_test_from_its_declaration():
    from worker.kinds import KINDS

    spec = KINDS["lr_find"]
    assert spec.form_names.tab == "LR range test" and spec.produces is None
    assert {"start_lr", "end_lr", "steps", "batch_size"} <= set(spec.params)
    assert not {"lr", "max_steps", "warmup"} & set(spec.params)  # the test sets its own schedule
