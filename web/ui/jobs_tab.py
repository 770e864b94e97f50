"""Jobs tab: the queue with progress bars, and one job's live curves, metrics, logs and controls.

A `gr.Timer` ticks every 2 s. Each tick reads the queue (`services.list_jobs`) and the selected
job (`get_job_detail`, `job_metrics`, `job_logs` after the last line already shown) from the
database, and sends the browser only what changed (`gr.skip()` otherwise), so an idle page costs
one small query and no redraw. The job being looked at is kept in the browser's localStorage
(gr.BrowserState), so a refresh — or coming back tomorrow — reopens it; everything else comes from
the database.

Click a row of the queue (or pick from the dropdown) to select a job. Cancel asks the worker to
checkpoint and stop (a queued job never starts); Resume queues a failed or cancelled job again,
continuing from its last checkpoint (not offered for a job marked not resumable). Rename and Delete
(with a confirmation naming what depends on the job) are for its owner and admins; the services
check it. The history lists who changed the job. "→ model #n" opens Chat with that model. "Compare runs"
overlays one curve (loss, val_loss, ...) of several jobs on one chart. A job goes by the name its form gave
(the model's) until someone renames it.
Labelers never see this tab (web/ui/__init__.py hides it; the services refuse them anyway).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from web.ui import current_user, db_session, error_text
from web.ui.devices_view import job_devices_text, workers_html
from worker.kinds import get_spec
from web.ui.plots import (JOBS_TABLE_CSS, NO_JOBS, elapsed_seconds, eta_seconds, events_html, format_metric,
                          human_duration, job_name, job_title, jobs_table_html, line_plot_value, message_html,
                          metrics_frame,
                          metrics_frame_along, metrics_signature, progress_bar_html, runs_frame, series_colours,
                          stat_cards_html, status_badge_html, thin_curves)

TICK_SECONDS = 2.0
QUEUE_LIMIT = 50
MAX_LOG_LINES = 400
CANCELLABLE = ("queued", "running")
RESUMABLE = ("failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")  # only these can be deleted

# Clicking a queue row selects that job (event delegation: rows are re-rendered every tick).
ROW_CLICK_JS = """
element.addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-job]');
  if (row) { trigger('click', {job_id: parseInt(row.dataset.job, 10)}); }
});
"""

# "→ model #n (open it in Chat)" in the job header: a click asks the server to open Chat with model n.
OPEN_MODEL_JS = """
element.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-open-model]');
  if (link) { event.preventDefault(); trigger('click', {model_id: parseInt(link.dataset.openModel, 10)}); }
});
"""

# "Compare runs": how many jobs one chart overlays, and the curve it opens on.
MAX_COMPARED_RUNS = 8
COMPARED_FIRST = "loss"

# Each kind declares its cards and charts (worker/kinds/); the tab has this many chart slots.
PLOT_SLOTS = 2
FALLBACK_CARDS = (("step", "step"), ("loss", "loss"))


# ----------------------------------------------------------------------------- pure shaping

def job_choices(jobs: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{j['id']} · {job_title(j)} · {j['status']}", int(j["id"])) for j in jobs]


def can_resume(detail: dict) -> bool:
    """Resume is offered for a failed or cancelled job that can continue (not e.g. one killed for memory)."""
    return detail.get("status") in RESUMABLE and detail.get("resumable", True) is not False


def detail_header_html(detail: dict) -> str:
    status = detail.get("status", "queued")
    elapsed = elapsed_seconds(detail.get("started_at"), detail.get("finished_at"))
    bits = [f"owner {html.escape(str(detail.get('owner') or '—'))}",
            f"elapsed {human_duration(elapsed)}" if elapsed is not None else "not started"]
    remaining = eta_seconds(detail.get("progress"), elapsed) if status == "running" else None
    if remaining is not None:
        bits.append(f'<span class="wb-eta">about {human_duration(remaining)} left</span>')
    estimate = estimate_vs_actual(detail, elapsed)
    if estimate:
        bits.append(f'<span class="wb-estimate">{estimate}</span>')
    if detail.get("attempts"):
        bits.append(f"attempt {detail['attempts']}")
    if detail.get("worker_host"):
        bits.append(f"on {html.escape(str(detail['worker_host']))}")
    if devices := job_devices_text(detail):
        bits.append(devices)
    if detail.get("cancel_requested") and status == "running":
        bits.append("<b>stopping…</b>")
    if detail.get("output_model_id"):
        model_id = int(detail["output_model_id"])
        bits.append(f'<a href="#" class="wb-open-model" data-open-model="{model_id}" '
                    f'title="Open Chat with model #{model_id}">→ model #{model_id} (open it in Chat)</a>')
    return (
        f'<div class="wb-job-head" data-status="{html.escape(status)}" '
        'style="display:flex;flex-direction:column;gap:6px">'
        f'<div style="display:flex;align-items:center;gap:10px;font-size:18px;font-weight:650">'
        f'Job #{detail["id"]} · {html.escape(job_title(detail))} {status_badge_html(status)}</div>'
        f'{progress_bar_html(detail.get("progress"), status)}'
        f'<div style="font-size:12px;opacity:.7">{" · ".join(bits)}</div></div>'
    )


def estimate_vs_actual(detail: dict, elapsed: float | None) -> str | None:
    """"estimated ~4m 26s (measured), took 4m 40s: 5% short" for a finished job with an estimate recorded at
    submit (`detail["estimate"]`; it counts training and evaluation, the time taken also the job's start and
    tokenizing the data on first use); "estimated ~…" before it finishes; None without an estimate."""
    estimate = detail.get("estimate") or {}
    if not isinstance(estimate.get("seconds"), (int, float)):
        return None
    said = f"estimated ~{human_duration(estimate['seconds'])} ({html.escape(str(estimate.get('source')))})"
    if detail.get("status") != "succeeded" or not elapsed:
        return said
    error = (estimate["seconds"] - elapsed) / elapsed
    return f"{said}, took {human_duration(elapsed)}: {abs(error):.0%} {'short' if error < 0 else 'long'}"


def metric_cards_html(detail: dict, step_reached: int | None = None) -> str:
    """The kind's cards; the step card shows `step_reached` (services.step_reached: a cancelled run's last
    step, which its log names) or else the newest metric step."""
    metrics = detail.get("metrics") or {}
    steps = detail.get("metric_steps") or {}
    cards = []
    last_step = step_reached if step_reached is not None else (max(steps.values()) if steps else None)
    spec = get_spec(detail.get("kind") or "")
    for name, label in (spec.metric_cards if spec is not None else FALLBACK_CARDS):
        if name == "step":
            max_steps = (detail.get("params") or {}).get("max_steps")
            value = "—" if last_step is None else f"{last_step:,}" + (f" / {max_steps:,}" if max_steps else "")
        else:
            value = format_metric(name, metrics.get(name))
        cards.append((label, value))
    return stat_cards_html(cards)


def error_html(detail: dict) -> str:
    if detail.get("error"):
        return message_html(str(detail["error"]), "error" if detail.get("status") == "failed" else "warn")
    return ""


def params_text(detail: dict) -> str:
    return json.dumps(detail.get("params") or {}, indent=2, sort_keys=True, default=str)


def empty_plot() -> pd.DataFrame:
    return metrics_frame([], {})


def plot_updates(detail: dict, metrics: list[dict]) -> list[gr.LinePlot]:
    """One update per chart slot: the kind's declared charts in order, the unused slots hidden."""
    spec = get_spec(detail.get("kind") or "")
    plots = list(spec.plots if spec is not None else ())[:PLOT_SLOTS]
    max_steps = (detail.get("params") or {}).get("max_steps")
    updates = [plot_update(metrics_frame(metrics, plot.series), max_steps, title=plot.title,
                           series_order=list(plot.series.values())) if plot.x == "step" else
               plot_update(metrics_frame_along(metrics, plot.series, plot.x, plot.log_x), title=plot.title,
                           series_order=list(plot.series.values()), x_title=plot.x_title) for plot in plots]
    return updates + [plot_update(empty_plot())] * (PLOT_SLOTS - len(updates))


def plot_update(frame: pd.DataFrame, max_steps: Any = None, title: str | None = None,
                series_order: list[str] | None = None, x_title: str = "step") -> gr.LinePlot:
    """A LinePlot update: hidden while there are no points (vega draws an empty frame with infinite
    axes), and an x axis spanning the whole run so the curve fills in as training goes. At most
    MAX_POINTS_PER_SERIES points a series go to the browser, a series of one point is drawn as a
    marker (`line_plot_value`), and each series has its colour (`series_colours`, in `series_order`). A chart
    against something else than the step (`metrics_frame_along`) spans its points, under its `x_title`."""
    if frame.empty:
        return gr.LinePlot(value=frame, visible=False)
    if x_title == "step":
        last = int(frame["step"].max())
        end = max(last, int(max_steps)) if isinstance(max_steps, (int, float)) and max_steps > 0 else last
        x_lim = [0, max(end, 1)]
    else:
        x_lim = [float(frame["step"].min()), float(frame["step"].max())]
    extra = {"title": title} if title else {}
    return gr.LinePlot(value=line_plot_value(thin_curves(frame)), visible=True, x_lim=x_lim, x_title=x_title,
                       color_map=series_colours(frame, series_order or ()), **extra)


def chart_key(update: Any) -> str | None:
    """What the browser builds a chart from besides its points (title, colours, mark, x range); None for a
    hidden chart. (Read from the arguments the update was made with: made in an event handler, a component
    has only those.)"""
    args = update.constructor_args
    if args.get("visible") is not True or not isinstance(args.get("value"), dict):
        return None
    return json.dumps([args.get("title"), args.get("color_map"), args["value"].get("mark"), args.get("x_lim")])


def staged_charts(state: dict, updates: dict[str, Any]) -> dict[str, Any]:
    """The chart updates to send now. Gradio's plot rebuilds its chart when a setting changes (title, colours,
    mark, x range) but fills the rebuilt chart with the points it had before the update (its rebuild races
    the new points): a job chosen after another showed the other job's curves. So a chart whose settings
    change is hidden now and shown again with the update by `pending_charts` (a chart shown from hidden is
    built from its new points); a chart whose settings stay gets the update at once (only its points change).
    `state` keeps each chart's settings ("chart_keys") and the held updates ("pending_charts")."""
    keys, pending = state.setdefault("chart_keys", {}), state.setdefault("pending_charts", {})
    now = {}
    for slot, update in updates.items():
        if not isinstance(update, gr.LinePlot):
            now[slot] = update  # gr.skip(): nothing changes
            continue
        key = chart_key(update)
        if key is not None and keys.get(slot) not in (None, key):
            pending[slot] = update.constructor_args
            now[slot] = gr.LinePlot(visible="hidden")
        else:
            pending.pop(slot, None)
            now[slot] = update
        keys[slot] = key
    return now


# ----------------------------------------------------------------------------- the tab

@dataclass
class JobsTab:
    settings: Any
    timer: gr.Timer
    selected: gr.BrowserState
    header: gr.HTML
    refresh_fn: Any  # paints the whole job (a new selection, the first paint)
    tick_fn: Any     # sends only what changed since the last paint
    refresh_inputs: list
    refresh_outputs: list
    then_show_charts: Any  # chains the sending of charts held back by `staged_charts` after an event

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        self.selected.render()  # at the top level (see build)
        # The first paint on page load, from the database, straight away: unqueued, it does not wait behind
        # the other tabs' load events (through the queue a reload showed blank charts for seconds).
        self.then_show_charts(blocks.load(self.refresh_fn, self.refresh_inputs, self.refresh_outputs, queue=False,
                                          show_progress="hidden", api_visibility="private"))
        # Opening the tab sends what changed since (the timer ticks only while the tab is shown); resending
        # everything there made each opening redraw every chart.
        self.then_show_charts(page.select(self.tick_fn, self.refresh_inputs, self.refresh_outputs,
                                          show_progress="hidden", api_visibility="private"))

    def on_job(self, job_id_component: gr.Component) -> tuple:
        """(fn, inputs, outputs) for `.then(...)`: select `job_id` and refresh (used after a submit)."""
        def select(job_id, seen_state, request: gr.Request = None):
            if not job_id:
                return tuple(gr.skip() for _ in self.refresh_outputs)
            return self.refresh_fn(int(job_id), seen_state, request)

        return select, [job_id_component, self.refresh_inputs[1]], self.refresh_outputs

    def open_models_in(self, tabs: gr.Tabs, chat_tab_id: str, remembered_tab: gr.BrowserState, chat: Any) -> None:
        """A click on "→ model #n" in the header switches to Chat with model n selected (`chat.show_model`)."""
        def open_model(evt: gr.EventData, request: gr.Request = None):
            model_id = getattr(evt, "model_id", None)
            if model_id is None:
                return (gr.skip(),) * (2 + len(chat.model_outputs))
            return (gr.Tabs(selected=chat_tab_id), chat_tab_id, *chat.show_model(int(model_id), request))

        self.header.click(open_model, None, [tabs, remembered_tab, *chat.model_outputs], show_progress="hidden",
                          api_visibility="private")


def delete_confirmation(detail: dict, dependents: list[str]) -> tuple[str, bool]:
    """(what the confirmation says, whether deleting is possible now) for a job."""
    title = f"job #{detail['id']} ({job_title(detail)})"
    if detail.get("status") not in FINISHED:
        return f"{title} is {detail.get('status')}: cancel it first, then delete it.", False
    if dependents:
        return (f"{title} cannot be deleted yet. These depend on it; delete them first (Models tab):\n• "
                + "\n• ".join(dependents)), False
    return (f"Delete {title}? Its metrics, log and run directory (checkpoints) are removed for good. "
            "Nothing else depends on it."), True


def build(settings) -> JobsTab:
    from web import services

    timer = gr.Timer(TICK_SECONDS)
    # Rendered by `wire` at the page's top level: a BrowserState inside a tab is read from localStorage only
    # when that tab is first drawn, after the load event has already asked for it (a reload lost the job).
    selected = gr.BrowserState(None, storage_key="workbench-selected-job", render=False)
    # What this browser was last sent, so a tick sends only changes: {queue, job, detail, metrics, log_id, logs}.
    seen = gr.State({})

    gr.Markdown("### Queue")
    queue = gr.HTML(jobs_table_html([]), css_template=JOBS_TABLE_CSS, js_on_load=ROW_CLICK_JS,
                    elem_id="jobs-queue", max_height=340)
    with gr.Row():
        picker = gr.Dropdown(label="Job", choices=[], elem_id="jobs-picker", scale=3,
                             info="or click a row above")
        cancel = gr.Button("Cancel job", variant="stop", elem_id="jobs-cancel", interactive=False, scale=1)
        resume = gr.Button("Resume job", variant="secondary", elem_id="jobs-resume", interactive=False, scale=1)
    action = gr.HTML(elem_id="jobs-action")
    header = gr.HTML(elem_id="jobs-detail-header", js_on_load=OPEN_MODEL_JS)
    cards = gr.HTML(elem_id="jobs-metrics")
    with gr.Row():
        # The first slot is every training kind's loss curve; the second is the kind's own (bits per byte,
        # token accuracy, ...).
        loss_plot = gr.LinePlot(empty_plot(), x="step", y="value", color="series", title="Loss", visible=False,
                                x_title="step", height=280, elem_id="jobs-loss-plot", show_label=False, color_title="")
        second_plot = gr.LinePlot(empty_plot(), x="step", y="value", color="series", visible=False, x_title="step",
                                  height=280, elem_id="jobs-second-plot", show_label=False, color_title="")
    error = gr.HTML(elem_id="jobs-error")
    with gr.Row():
        logs = gr.Textbox(label="Log", lines=12, max_lines=12, autoscroll=True, interactive=False,
                          elem_id="jobs-logs", scale=3)
        params = gr.Code(label="Parameters", language="json", interactive=False, elem_id="jobs-params",
                         scale=2, max_lines=14)
    history = gr.HTML(elem_id="jobs-events")
    with gr.Row(equal_height=True):
        name_box = gr.Textbox(label="Name", placeholder="blank: the name its form gave, else the kind",
                              elem_id="jobs-name", scale=3, max_length=200)
        rename = gr.Button("Rename", elem_id="jobs-rename", interactive=False, scale=1)
        remove = gr.Button("Delete job…", variant="stop", elem_id="jobs-delete", interactive=False, scale=1)
    with gr.Group(visible=False, elem_id="jobs-delete-confirm") as confirm_box:
        confirm_text = gr.HTML(elem_id="jobs-delete-text")
        with gr.Row():
            confirm_yes = gr.Button("Delete it", variant="stop", elem_id="jobs-delete-yes")
            confirm_no = gr.Button("Keep it", elem_id="jobs-delete-no")

    with gr.Accordion("Compare runs", open=False, elem_id="jobs-compare-panel"):
        with gr.Row():
            compare_runs = gr.Dropdown(label="Runs", choices=[], multiselect=True, max_choices=MAX_COMPARED_RUNS,
                                       elem_id="jobs-compare-runs", scale=3,
                                       info=f"up to {MAX_COMPARED_RUNS} jobs: their curves on one chart")
            compare_metric = gr.Dropdown(label="Curve", choices=[COMPARED_FIRST], value=COMPARED_FIRST,
                                         elem_id="jobs-compare-metric", scale=1)
        compare_plot = gr.LinePlot(empty_plot(), x="step", y="value", color="series", visible=False, x_title="step",
                                   height=320, elem_id="jobs-compare-plot", show_label=False, color_title="run")
        compare_note = gr.HTML(elem_id="jobs-compare-note")
        compare_charts = gr.State({})  # the comparison chart's settings and held-back update (staged_charts)

    outputs = [selected, seen, queue, picker, header, cards, loss_plot, second_plot, error, logs, params, cancel,
               resume, history, name_box, rename, remove, compare_runs]
    parts = ("queue", "picker", "header", "cards", "loss", "second", "error", "logs", "params", "cancel", "resume",
             "history", "name", "rename", "remove", "compare")

    def nothing() -> tuple:
        return tuple(gr.skip() for _ in outputs)

    def refresh(selected_id, seen_state, request: gr.Request = None, explicit: bool = False):
        seen_state = dict(seen_state or {})
        requested = selected_id
        user = current_user(settings, request)
        if not services.can(user, services.Action.read_training):
            return nothing()  # a labeler: the tab is hidden and the services would refuse
        with db_session(settings) as session:
            jobs = services.list_jobs(limit=QUEUE_LIMIT, session=session, viewer=user)
            workers = services.worker_devices(session, settings)  # their device slots, under the queue
            ids = [j["id"] for j in jobs]
            if selected_id is not None:
                try:
                    selected_id = int(selected_id)
                except (TypeError, ValueError):
                    selected_id = None
            if selected_id is None and ids:
                selected_id = ids[0]  # nothing chosen yet: the newest job
            detail = metrics = None
            new_logs: list[dict] = []
            if selected_id is not None:
                try:
                    detail = services.get_job_detail(selected_id, session=session, viewer=user)
                except services.NotFound:
                    selected_id, detail = (ids[0] if ids else None), None
                    if selected_id is not None:
                        detail = services.get_job_detail(selected_id, session=session, viewer=user)
            if detail is not None:
                same_job = seen_state.get("job") == selected_id
                finished = detail["status"] in ("succeeded", "failed", "cancelled")
                # A finished job's curves are drawn once; a live one is re-read every tick.
                if not (same_job and finished and seen_state.get("final_metrics")):
                    metrics = services.job_metrics(selected_id, session=session, viewer=user)
                after = seen_state.get("log_id", 0) if same_job else 0
                new_logs = services.job_logs(selected_id, after_id=after, session=session, viewer=user)

        out: dict[str, Any] = {part: gr.skip() for part in parts}
        queue_html = jobs_table_html(jobs, selected_id) + workers_html(workers)
        if queue_html != seen_state.get("queue"):
            out["queue"] = queue_html
            seen_state["queue"] = queue_html
        choices = job_choices(jobs)
        if selected_id is not None and selected_id not in ids:
            choices.append((f"#{selected_id}", selected_id))
        picker_key = json.dumps([choices, selected_id])
        if picker_key != seen_state.get("picker"):
            out["picker"] = gr.Dropdown(choices=choices, value=selected_id)
            out["compare"] = gr.Dropdown(choices=job_choices(jobs))  # the runs chosen to compare stay chosen
            seen_state["picker"] = picker_key

        if detail is None:
            if seen_state.get("job") is not None or "detail" not in seen_state:
                out.update(header=message_html("No job selected." if ids else NO_JOBS, "info"), cards="",
                           loss=plot_update(empty_plot()), second=plot_update(empty_plot()), error="", logs="",
                           params="", cancel=gr.Button(interactive=False), resume=gr.Button(interactive=False),
                           history="", name="", rename=gr.Button(interactive=False),
                           remove=gr.Button(interactive=False))
            seen_state.update(job=None, detail="none", metrics=None, log_id=0, logs=[], final_metrics=False,
                              logs_sent=False)
        else:
            if seen_state.get("job") != selected_id:
                seen_state.update(job=selected_id, detail=None, metrics=None, log_id=0, logs=[],
                                  final_metrics=False, logs_sent=False)
                out["name"] = job_name(detail) or ""  # only on a new selection, never over someone's typing
            status = detail["status"]
            detail_key = json.dumps([detail.get(k) for k in ("status", "progress", "error", "attempts",
                                                             "cancel_requested", "output_model_id",
                                                             "worker_host", "name", "resumable")]
                                    + [detail.get("metrics"), str(detail.get("started_at")),
                                       str(detail.get("finished_at")), len(detail.get("events") or []),
                                       status == "running" and int(elapsed_seconds(detail.get("started_at")) or 0)],
                                    default=str)
            if detail_key != seen_state.get("detail"):
                seen_state["detail"] = detail_key
                owner_or_admin = services.can_change(user, detail.get("owner_id"), services.Action.change_own_job,
                                                     services.Action.change_any_job)
                out.update(header=detail_header_html(detail),
                           cards=metric_cards_html(detail, services.step_reached(settings, detail)),
                           error=error_html(detail), params=params_text(detail), history=events_html(
                               detail.get("events") or []),
                           cancel=gr.Button(interactive=owner_or_admin and status in CANCELLABLE
                                            and not detail.get("cancel_requested")),
                           resume=gr.Button(interactive=owner_or_admin and can_resume(detail)),
                           rename=gr.Button(interactive=owner_or_admin),
                           remove=gr.Button(interactive=owner_or_admin and status in FINISHED))
            if metrics is not None:
                signature = json.dumps(metrics_signature(metrics), default=str)
                if signature != seen_state.get("metrics"):
                    seen_state["metrics"] = signature
                    out["loss"], out["second"] = plot_updates(detail, metrics)
                seen_state["final_metrics"] = status in ("succeeded", "failed", "cancelled")
            if new_logs or not seen_state.get("logs_sent"):
                lines = (seen_state.get("logs") or []) + [row["line"] for row in new_logs]
                lines = lines[-MAX_LOG_LINES:]
                seen_state["logs"] = lines
                if new_logs:
                    seen_state["log_id"] = new_logs[-1]["id"]
                seen_state["logs_sent"] = True
                out["logs"] = "\n".join(lines)
        out.update(staged_charts(seen_state, {"loss": out["loss"], "second": out["second"]}))
        # A tick writes the selection back only when it had to change it (none yet, or deleted): a tick
        # that started before someone picked another job must not put the old one back.
        selected_out = selected_id if (explicit or selected_id != requested) else gr.skip()
        return (selected_out, seen_state, *(out[part] for part in parts))

    def select_job(job_id, seen_state, request: gr.Request = None):
        state = dict(seen_state or {})
        state.pop("picker", None)
        state.pop("queue", None)
        state["job"] = None  # force a full redraw of the detail for the new job
        state["logs_sent"] = False
        return refresh(job_id, state, request, explicit=True)

    def select_from_row(seen_state, evt: gr.EventData, request: gr.Request = None):
        job_id = getattr(evt, "job_id", None)
        if job_id is None:
            return nothing()
        return select_job(job_id, seen_state, request)

    def pending_charts(seen_state):
        """(state, loss chart, second chart): the chart updates `staged_charts` held back, now."""
        state = dict(seen_state or {})
        pending = state.pop("pending_charts", None) or {}
        if not pending:
            return gr.skip(), gr.skip(), gr.skip()
        return (state, *(gr.LinePlot(**pending[slot]) if slot in pending else gr.skip()
                         for slot in ("loss", "second")))

    def then_show_charts(dependency) -> None:
        dependency.then(pending_charts, [seen], [seen, loss_plot, second_plot], show_progress="hidden",
                        api_visibility="private")

    tick_inputs = [selected, seen]
    then_show_charts(timer.tick(refresh, tick_inputs, outputs, show_progress="hidden", concurrency_limit=8,
                                trigger_mode="always_last", api_visibility="private"))
    then_show_charts(picker.input(select_job, [picker, seen], outputs, show_progress="hidden",
                                  api_visibility="private"))
    then_show_charts(queue.click(select_from_row, [seen], outputs, show_progress="hidden", api_visibility="private"))

    def redrawn(job_id, seen_state, request) -> tuple:
        state = dict(seen_state or {})
        state["detail"] = None
        return refresh(job_id, state, request)

    def do_action(kind: str):
        def run(job_id, seen_state, name, request: gr.Request):
            if job_id is None:
                return (message_html("Select a job first.", "error"),) + nothing()
            user = current_user(settings, request)
            who = user["name"] if user else None
            try:
                with db_session(settings) as session:
                    if kind == "cancel":
                        services.cancel_job(session, int(job_id), who)
                        done = "Cancellation requested for job #{id}: a running job saves a checkpoint and stops."
                    elif kind == "resume":
                        services.resume_job(session, int(job_id), who)
                        done = "Job #{id} queued again; it continues from its last checkpoint."
                    else:
                        services.rename_job(session, int(job_id), name, who)
                        done = "Job #{id} renamed."
            except (services.ServiceError, ValueError) as err:
                return (message_html(f"Could not {kind} job #{job_id}: {error_text(err)}", "error"),) + nothing()
            return (message_html(done.format(id=job_id), "ok"),) + redrawn(job_id, seen_state, request)
        return run

    for button, kind in ((cancel, "cancel"), (resume, "resume"), (rename, "rename")):
        then_show_charts(button.click(do_action(kind), [selected, seen, name_box], [action] + outputs,
                                      show_progress="hidden", api_visibility="private"))

    def compare(job_ids, metric, request: gr.Request = None):
        """(curve choices, chart, note) for the chosen runs: `metric` of each on one chart, a colour a run."""
        job_ids = [int(job_id) for job_id in job_ids or []][:MAX_COMPARED_RUNS]
        if not job_ids:
            return (gr.Dropdown(choices=[COMPARED_FIRST], value=COMPARED_FIRST), plot_update(empty_plot()),
                    message_html("Choose two or more runs to see their curves on one chart.", "info"))
        user = current_user(settings, request)
        try:
            with db_session(settings) as session:
                details = [services.get_job_detail(job_id, session=session, viewer=user) for job_id in job_ids]
                names = sorted({name for detail in details for name in detail["metrics"]},
                               key=lambda name: (name != COMPARED_FIRST, name))
                metric = metric if metric in names else (names[0] if names else COMPARED_FIRST)
                curves = {f"#{detail['id']} {job_title(detail)}": services.job_metrics(
                    detail["id"], name=metric, session=session, viewer=user) for detail in details}
        except (services.ServiceError, ValueError) as err:
            return gr.skip(), gr.skip(), message_html(error_text(err), "error")
        frame = runs_frame(curves, metric)
        missing = [label for label, records in curves.items() if not records]
        note = message_html(f"No {metric} in: {', '.join(missing)}.", "warn") if missing else ""
        return (gr.Dropdown(choices=names or [COMPARED_FIRST], value=metric),
                plot_update(frame, title=f"{metric} of {len(curves) - len(missing)} run(s)",
                            series_order=list(curves)), note)

    def compare_staged(job_ids, metric, charts_state, request: gr.Request = None):
        """`compare`, its chart held back when its settings change (see `staged_charts`)."""
        metric_update, chart, note = compare(job_ids, metric, request)
        state = dict(charts_state or {})
        return metric_update, staged_charts(state, {"compare": chart})["compare"], note, state

    def pending_comparison(charts_state):
        state = dict(charts_state or {})
        pending = (state.pop("pending_charts", None) or {}).get("compare")
        return (state, gr.LinePlot(**pending)) if pending else (gr.skip(), gr.skip())

    for changed in (compare_runs.input, compare_metric.input):
        changed(compare_staged, [compare_runs, compare_metric, compare_charts],
                [compare_metric, compare_plot, compare_note, compare_charts], show_progress="hidden",
                api_visibility="private").then(pending_comparison, [compare_charts], [compare_charts, compare_plot],
                                               show_progress="hidden", api_visibility="private")

    def ask_delete(job_id, request: gr.Request):
        """Open the confirmation, saying what depends on the job (its models, generated answers)."""
        if job_id is None:
            return gr.Group(visible=False), "", gr.Button(), message_html("Select a job first.", "error")
        user = current_user(settings, request)
        try:
            with db_session(settings) as session:
                detail = services.get_job_detail(int(job_id), session=session, viewer=user)
                dependents = services.job_dependents(session, int(job_id))
        except (services.ServiceError, ValueError) as err:
            return gr.Group(visible=False), "", gr.Button(), message_html(error_text(err), "error")
        text, possible = delete_confirmation(detail, dependents)
        return (gr.Group(visible=True), message_html(text, "warn" if possible else "error"),
                gr.Button(interactive=possible), "")

    def do_delete(job_id, seen_state, request: gr.Request):
        user = current_user(settings, request)
        try:
            with db_session(settings) as session:
                services.delete_job(session, settings, int(job_id), user["name"] if user else None)
        except (services.ServiceError, ValueError, TypeError) as err:
            return (gr.Group(visible=False), message_html(f"Not deleted — {error_text(err)}", "error")) + nothing()
        state = dict(seen_state or {})
        state.pop("queue", None)
        state.pop("picker", None)
        # The selection moves to the newest job (refresh does that for an id that is gone).
        return (gr.Group(visible=False), message_html(f"Job #{job_id} deleted.", "ok")) + refresh(
            None, state, request, explicit=True)

    remove.click(ask_delete, [selected], [confirm_box, confirm_text, confirm_yes, action], show_progress="hidden",
                 api_visibility="private")
    then_show_charts(confirm_yes.click(do_delete, [selected, seen], [confirm_box, action] + outputs,
                                       show_progress="hidden", api_visibility="private"))
    confirm_no.click(lambda: gr.Group(visible=False), None, [confirm_box], queue=False, api_visibility="private")

    return JobsTab(settings=settings, timer=timer, selected=selected, header=header, refresh_fn=select_job,
                   tick_fn=refresh, refresh_inputs=tick_inputs, refresh_outputs=outputs,
                   then_show_charts=then_show_charts)
