"""The Jobs, Models and Chat tabs' handlers without a browser, on a real database: which tabs a role sees
and which one a reload reopens, the time left, one-point charts, empty states, the step a cancelled run
reached, Resume only where it can help, who-did-what, and rename/delete with their confirmations."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import gradio as gr
import pytest

from db.models import Job, JobStatus, Metric, Model, ModelKind
from tests.conftest import ADMIN, LABELER, TRAINER
from tests.support.records import add_model, make_job
from web.ui import tab_to_open, visible_tabs
from web.ui.plots import eta_seconds, jobs_table_html, metrics_frame, needs_markers

# Handler behaviour does not depend on the backend (tests/web/test_roles.py covers PostgreSQL).
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
OUTPUTS = ("selected", "seen", "queue", "picker", "header", "cards", "loss", "second", "error", "logs", "params",
           "cancel", "resume", "history", "name", "rename", "remove", "compare")


class FakeRequest:
    def __init__(self, username):
        self.username = username


def handlers(blocks: gr.Blocks) -> dict:
    """Event handlers by "module:qualified name" and by their short name (the last registered wins)."""
    found = {}
    for block_function in blocks.fns.values():
        fn = block_function.fn
        if fn is not None:
            found[fn.__qualname__.split("<locals>.")[-1]] = fn
            found[f"{fn.__module__}:{fn.__qualname__}"] = fn
    return found


def as_user(credentials) -> FakeRequest:
    return FakeRequest(credentials[0])


@pytest.fixture
def jobs_tab(api_settings, users):
    from web.ui import jobs_tab as module

    with gr.Blocks() as blocks:
        module.build(api_settings)
    return handlers(blocks)


def show(jobs_tab, job_id, who=TRAINER) -> dict:
    return dict(zip(OUTPUTS, jobs_tab["select_job"](job_id, {}, as_user(who))))


# ----------------------------------------------------------------------------- tabs by role, reload

@SQLITE_ONLY
def test_labelers_see_no_training_tabs_and_a_reload_reopens_the_remembered_tab(api_settings, users):
    from web.ui import build_ui

    labeler, trainer = {"id": 2, "name": "l", "role": "labeler"}, {"id": 1, "name": "t", "role": "trainer"}
    assert visible_tabs(labeler) == {"datasets": False, "train": False, "jobs": False, "models": False}
    assert all(visible_tabs(trainer).values())
    assert tab_to_open("jobs", trainer) == "jobs" and tab_to_open(None, trainer) == "datasets"
    assert tab_to_open("jobs", labeler) == "label" and tab_to_open("arena", labeler) == "arena"
    assert tab_to_open("admin", trainer) == "datasets"

    found = handlers(build_ui(api_settings))
    on_load = found["web.ui:build_ui.<locals>.on_load"]
    header, *pages, tabs = on_load("jobs", as_user(LABELER))
    assert LABELER[0] in header and [page.visible for page in pages] == [False] * 4 and tabs.selected == "label"
    header, *pages, tabs = on_load("models", as_user(TRAINER))
    assert [page.visible for page in pages] == [True] * 4 and tabs.selected == "models"


# ----------------------------------------------------------------------------- pure pieces

def test_time_left_comes_from_progress_and_elapsed():
    assert eta_seconds(0.25, 60.0) == pytest.approx(180.0)
    assert eta_seconds(0.5, 10.0) == pytest.approx(10.0)
    for progress, elapsed in ((0.0, 60.0), (0.005, 60.0), (1.0, 60.0), (0.5, None), (None, 5.0), ("x", 5.0)):
        assert eta_seconds(progress, elapsed) is None


def test_a_chart_with_one_point_per_series_draws_points():
    from web.ui.jobs_tab import plot_update

    one_eval = metrics_frame([{"step": 50, "name": "val_bpb", "value": 1.9}], {"val_bpb": "val bits/byte"})
    two_evals = metrics_frame([{"step": 50, "name": "val_bpb", "value": 1.9},
                               {"step": 100, "name": "val_bpb", "value": 1.7}], {"val_bpb": "val bits/byte"})
    assert needs_markers(one_eval) and not needs_markers(two_evals) and not needs_markers(metrics_frame([], {}))
    # The mark travels in the update's value: Gradio rebuilds the component from its arguments for each update.
    shown = plot_update(one_eval)
    assert shown.value["mark"] == "point" and shown.value["data"] == [[50, 1.9, "val bits/byte"]]
    assert plot_update(two_evals).value["mark"] == "line"
    plot = gr.LinePlot(x="step", y="value", color="series")
    assert plot.postprocess(shown.value) == shown.value  # passed to the browser as it is


def test_empty_states_say_what_to_do():
    from web.ui.chat_tab import model_info_html
    from web.ui.models_tab import models_table_html

    assert "No jobs yet — train a model in Train" in jobs_table_html([])
    assert "No models yet — train one" in models_table_html([])
    assert "No models yet" in model_info_html(None, any_models=False)
    assert "Choose a model" in model_info_html(None, any_models=True)


# ----------------------------------------------------------------------------- the Jobs tab

@SQLITE_ONLY
def test_a_running_job_shows_time_left_history_and_owner_only_controls(jobs_tab, session, users):
    started = datetime.now(timezone.utc) - timedelta(seconds=100)
    job_id = make_job(session, users["trainer"], progress=0.5, started_at=started)
    shown = show(jobs_tab, job_id)
    assert "wb-eta" in shown["header"] and "left" in shown["header"]
    assert "submitted by <b>trainer1</b>" in shown["history"]
    assert shown["cancel"].interactive and shown["rename"].interactive and not shown["remove"].interactive

    admins = make_job(session, users["admin"], progress=0.5, started_at=started)
    shown = show(jobs_tab, admins)
    assert not shown["cancel"].interactive and not shown["rename"].interactive  # someone else's job

    nothing = jobs_tab["select_job"](job_id, {}, as_user(LABELER))
    assert all(isinstance(item, type(gr.skip())) or item == gr.skip() for item in nothing)


@SQLITE_ONLY
def test_the_step_card_of_a_cancelled_job_shows_the_step_its_log_names(jobs_tab, session, users, api_settings):
    job_id = make_job(session, users["trainer"], status=JobStatus.cancelled)
    session.add_all([Metric(job_id=job_id, step=50, name="loss", value=3.0)])
    session.commit()
    # What llm.train writes when a run stops at step 57 between two logged steps (log: "stopped at step 57").
    checkpoint = api_settings.data_dir / "runs" / str(job_id) / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint.json").write_text(json.dumps({"step": 57}))
    assert "57 / 100" in show(jobs_tab, job_id)["cards"]


@SQLITE_ONLY
def test_resume_is_not_offered_for_a_job_that_cannot_resume(jobs_tab, session, users):
    resumable = make_job(session, users["trainer"], status=JobStatus.failed)
    assert show(jobs_tab, resumable)["resume"].interactive is True
    hopeless = make_job(session, users["trainer"], status=JobStatus.failed, resumable=False)
    assert show(jobs_tab, hopeless)["resume"].interactive is False


@SQLITE_ONLY
def test_an_output_model_is_a_link_that_opens_chat_with_it(api_settings, session, users):
    from web.ui import build_ui

    model_id = add_model(session, api_settings, users["trainer"], "tiny-chat", kind=ModelKind.sft)
    job_id = make_job(session, users["trainer"], status=JobStatus.succeeded, output_model_id=model_id)
    found = handlers(build_ui(api_settings))
    header = dict(zip(OUTPUTS, found["web.ui.jobs_tab:build.<locals>.select_job"](job_id, {}, as_user(TRAINER))))["header"]
    assert f'data-open-model="{model_id}"' in header and "<a " in header
    event = gr.EventData(None, {"model_id": model_id})
    tabs, remembered, dropdown, info = found["open_model"](event, as_user(TRAINER))
    assert tabs.selected == "chat" and remembered == "chat" and dropdown.value == model_id and "tiny-chat" in info


@SQLITE_ONLY
def test_rename_then_delete_a_job_with_its_confirmation(jobs_tab, session, users, api_settings):
    model_id = add_model(session, api_settings, users["trainer"], "made-by-it")
    job_id = make_job(session, users["trainer"], status=JobStatus.succeeded, output_model_id=model_id)
    session.get(Model, model_id).job_id = job_id
    session.commit()
    trainer = as_user(TRAINER)

    rename = jobs_tab["run"]
    message, *outputs = rename(job_id, {}, "shakespeare run", trainer)
    # Cancel, resume and rename share one factory; the last one built is rename's.
    assert "renamed" in message and "shakespeare run" in dict(zip(OUTPUTS, outputs))["header"]

    box, text, yes, _ = jobs_tab["ask_delete"](job_id, trainer)
    assert box.visible and f"model #{model_id} &#x27;made-by-it&#x27;" in text and yes.interactive is False
    session.get(Model, model_id).job_id = None
    session.get(Job, job_id).output_model_id = None
    session.commit()
    box, text, yes, _ = jobs_tab["ask_delete"](job_id, trainer)
    assert "Nothing else depends on it" in text and yes.interactive is True
    box, message, *outputs = jobs_tab["do_delete"](job_id, {}, trainer)
    assert box.visible is False and f"Job #{job_id} deleted" in message
    session.expire_all()
    assert session.get(Job, job_id) is None


@SQLITE_ONLY
def test_runs_named_in_their_form_show_that_name_and_several_runs_compare_on_one_chart(jobs_tab, session, users):
    def sft_run(name: str) -> int:  # named in the Train form: the name is its model's, job.name stays empty
        job = Job(kind="sft", status=JobStatus.succeeded, params={"max_steps": 3, "name": name},
                  owner_id=users["trainer"].id)
        session.add(job)
        session.commit()
        return job.id

    first, second = sft_run("sft-lr-1e-4"), sft_run("sft-lr-3e-4")
    session.add_all([Metric(job_id=job_id, step=step, name=name, value=value)
                     for job_id, scale in ((first, 1.0), (second, 0.5))
                     for step in (1, 2, 3) for name, value in (("loss", scale * 4 / step), ("val_loss", scale))])
    session.commit()

    shown = show(jobs_tab, first)
    assert "sft-lr-1e-4" in shown["queue"] and "sft-lr-3e-4" in shown["queue"]  # was "sft" and "sft"
    assert shown["name"] == "sft-lr-1e-4" and f"Job #{first} · sft-lr-1e-4" in shown["header"]
    assert [label for label, _ in shown["compare"].choices][:2] == [f"#{second} · sft-lr-3e-4 · succeeded",
                                                                   f"#{first} · sft-lr-1e-4 · succeeded"]

    compare, held_back = jobs_tab["compare_staged"], jobs_tab["pending_comparison"]
    metric, chart, note, charts = compare([first, second], "loss", {}, as_user(TRAINER))
    assert metric.value == "loss" and metric.choices == [("loss", "loss"), ("val_loss", "val_loss")]
    assert chart.visible and note == ""
    runs = {row[2] for row in chart.value["data"]}
    assert runs == {f"#{first} sft-lr-1e-4", f"#{second} sft-lr-3e-4"} and len(chart.value["data"]) == 6
    assert chart.color_map == {f"#{first} sft-lr-1e-4": "#4c78a8", f"#{second} sft-lr-3e-4": "#f58518"}
    # Another curve changes the chart's title: the chart is hidden, then shown with it (see staged_charts).
    metric, chart, _, charts = compare([first, second], "val_loss", charts, as_user(TRAINER))
    assert metric.value == "val_loss" and chart.visible == "hidden"
    charts, chart = held_back(charts)
    assert {row[1] for row in chart.value["data"]} == {1.0, 0.5} and chart.visible is True
    assert held_back(charts) == (gr.skip(), gr.skip())  # sent once
    metric, chart, note, _ = compare([], "loss", charts, as_user(TRAINER))
    assert chart.visible is False and "Choose two or more runs" in note


def test_a_chart_whose_settings_change_is_hidden_then_shown_with_its_new_points():
    from web.ui.jobs_tab import plot_update, staged_charts

    loss = metrics_frame([{"step": step, "name": "loss", "value": 1.0} for step in (1, 2)], {"loss": "train loss"})
    both = metrics_frame([{"step": step, "name": name, "value": 1.0}
                          for step in (1, 2) for name in ("loss", "val_loss")],
                         {"loss": "train loss", "val_loss": "val loss"})
    state: dict = {}
    first = staged_charts(state, {"loss": plot_update(loss, 10)})["loss"]
    assert first.visible is True  # a chart shown from hidden is built from its points
    assert staged_charts(state, {"loss": plot_update(loss, 10)})["loss"].visible is True  # only points change
    assert not state["pending_charts"]
    changed = staged_charts(state, {"loss": plot_update(both, 10)})["loss"]  # a new series: new colours
    assert changed.visible == "hidden" and state["pending_charts"]["loss"]["color_map"] == {
        "train loss": "#4c78a8", "val loss": "#f58518"}
    assert staged_charts(state, {"loss": gr.skip()})["loss"] == gr.skip()


# ----------------------------------------------------------------------------- Models and Chat

@SQLITE_ONLY
def test_models_tab_delete_confirmation_names_dependents(api_settings, session, users):
    from web.ui import models_tab

    with gr.Blocks() as blocks:
        models_tab.build(api_settings)
    found = handlers(blocks)
    base = add_model(session, api_settings, users["trainer"], "base")
    child = add_model(session, api_settings, users["trainer"], "child", kind=ModelKind.sft, parent_model_id=base)
    box, text, yes, _ = found["ask_delete"](base, as_user(TRAINER))
    assert box.visible and f"model #{child} &#x27;child&#x27;" in text and yes.interactive is False
    message, *_ = found["do_rename"](child, "renamed-child", as_user(TRAINER))
    assert "renamed-child" in message
    box, message, table, *_ = found["do_delete"](child, as_user(ADMIN))
    assert f"Model #{child} deleted" in message and "renamed-child" not in table
    box, text, yes, _ = found["ask_delete"](base, as_user(TRAINER))
    assert yes.interactive is True


@SQLITE_ONLY
def test_chat_offers_labelers_the_chat_models_only_and_says_when_there_are_none(api_settings, session, users):
    from web.ui import chat_tab

    with gr.Blocks():
        tab = chat_tab.build(api_settings)
    dropdown, info = tab.refresh_models(None, as_user(LABELER))
    assert dropdown.choices == [] and "No models yet" in info
    add_model(session, api_settings, users["admin"], "gpt2-base")
    chat = add_model(session, api_settings, users["trainer"], "chatty", kind=ModelKind.sft)
    dropdown, _ = tab.refresh_models(None, as_user(LABELER))
    assert [value for _, value in dropdown.choices] == [chat]
    dropdown, _ = tab.refresh_models(None, as_user(TRAINER))
    assert len(dropdown.choices) == 2
