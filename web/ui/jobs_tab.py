"""Jobs tab: the queue with progress bars, and one job's live curves, metrics, logs and controls.

A `gr.Timer` ticks every 2 s. Each tick reads the queue (`services.list_jobs`) and the selected
job (`get_job_detail`, `job_metrics`, `job_logs` after the last line already shown) from the
database, and sends the browser only what changed (`gr.skip()` otherwise), so an idle page costs
one small query and no redraw. The job being looked at is kept in the browser's localStorage
(gr.BrowserState), so a refresh — or coming back tomorrow — reopens it; everything else comes from
the database.

Click a row of the queue (or pick from the dropdown) to select a job. Cancel asks the worker to
checkpoint and stop (a queued job never starts); Resume queues a failed or cancelled job again,
continuing from its last checkpoint.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from web.ui import can_write, current_user, db_session, error_text
from web.ui.plots import (BPB_SERIES, JOBS_TABLE_CSS, LOSS_SERIES, elapsed_seconds, format_metric,
                          human_duration, jobs_table_html, message_html, metrics_frame, metrics_signature,
                          progress_bar_html, stat_cards_html, status_badge_html)

TICK_SECONDS = 2.0
QUEUE_LIMIT = 50
MAX_LOG_LINES = 400
CANCELLABLE = ("queued", "running")
RESUMABLE = ("failed", "cancelled")

# Clicking a queue row selects that job (event delegation: rows are re-rendered every tick).
ROW_CLICK_JS = """
element.addEventListener('click', (event) => {
  const row = event.target.closest('tr[data-job]');
  if (row) { trigger('click', {job_id: parseInt(row.dataset.job, 10)}); }
});
"""

METRIC_CARDS = [("step", "step"), ("loss", "loss"), ("val_loss", "val loss"), ("val_bpb", "val bits/byte"),
                ("tokens_per_s", "tokens/s"), ("mfu", "MFU"), ("lr", "learning rate")]


# ----------------------------------------------------------------------------- pure shaping

def job_choices(jobs: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{j['id']} · {j['kind']} · {j['status']}", int(j["id"])) for j in jobs]


def detail_header_html(detail: dict) -> str:
    status = detail.get("status", "queued")
    elapsed = elapsed_seconds(detail.get("started_at"), detail.get("finished_at"))
    bits = [f"owner {html.escape(str(detail.get('owner') or '—'))}",
            f"elapsed {human_duration(elapsed)}" if elapsed is not None else "not started"]
    if detail.get("attempts"):
        bits.append(f"attempt {detail['attempts']}")
    if detail.get("worker_host"):
        bits.append(f"on {html.escape(str(detail['worker_host']))}")
    if detail.get("cancel_requested") and status == "running":
        bits.append("<b>stopping…</b>")
    if detail.get("output_model_id"):
        bits.append(f"→ model #{detail['output_model_id']} (open it in Chat)")
    return (
        f'<div class="wb-job-head" data-status="{html.escape(status)}" '
        'style="display:flex;flex-direction:column;gap:6px">'
        f'<div style="display:flex;align-items:center;gap:10px;font-size:18px;font-weight:650">'
        f'Job #{detail["id"]} · {html.escape(str(detail.get("kind")))} {status_badge_html(status)}</div>'
        f'{progress_bar_html(detail.get("progress"), status)}'
        f'<div style="font-size:12px;opacity:.7">{" · ".join(bits)}</div></div>'
    )


def metric_cards_html(detail: dict) -> str:
    metrics = detail.get("metrics") or {}
    steps = detail.get("metric_steps") or {}
    cards = []
    last_step = max(steps.values()) if steps else None
    for name, label in METRIC_CARDS:
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


def plot_update(frame: pd.DataFrame, max_steps: Any = None) -> gr.LinePlot:
    """A LinePlot update: hidden while there are no points (vega draws an empty frame with infinite
    axes), and an x axis spanning the whole run so the curve fills in as training goes."""
    if frame.empty:
        return gr.LinePlot(value=frame, visible=False)
    last = int(frame["step"].max())
    end = max(last, int(max_steps)) if isinstance(max_steps, (int, float)) and max_steps > 0 else last
    return gr.LinePlot(value=frame, visible=True, x_lim=[0, max(end, 1)])


# ----------------------------------------------------------------------------- the tab

@dataclass
class JobsTab:
    settings: Any
    timer: gr.Timer
    selected: gr.BrowserState
    refresh_fn: Any
    refresh_inputs: list
    refresh_outputs: list

    def wire(self, blocks: gr.Blocks, page: gr.Tab) -> None:
        # First paint on page load, then on every tick; opening the tab refreshes at once.
        for event in (blocks.load, page.select):
            event(self.refresh_fn, self.refresh_inputs, self.refresh_outputs, show_progress="hidden",
                  api_visibility="private")

    def on_job(self, job_id_component: gr.Component) -> tuple:
        """(fn, inputs, outputs) for `.then(...)`: select `job_id` and refresh (used after a submit)."""
        def select(job_id, seen_state, request: gr.Request = None):
            if not job_id:
                return tuple(gr.skip() for _ in self.refresh_outputs)
            return self.refresh_fn(int(job_id), seen_state, request)

        return select, [job_id_component, self.refresh_inputs[1]], self.refresh_outputs


def build(settings) -> JobsTab:
    from web import services

    timer = gr.Timer(TICK_SECONDS)
    selected = gr.BrowserState(None, storage_key="workbench-selected-job")
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
    header = gr.HTML(elem_id="jobs-detail-header")
    cards = gr.HTML(elem_id="jobs-metrics")
    with gr.Row():
        loss_plot = gr.LinePlot(empty_plot(), x="step", y="value", color="series", title="Loss", visible=False,
                                y_title="cross-entropy", x_title="step", height=280, elem_id="jobs-loss-plot",
                                show_label=False, color_title="")
        bpb_plot = gr.LinePlot(empty_plot(), x="step", y="value", color="series", visible=False,
                               title="Validation bits per byte",
                               y_title="bits/byte", x_title="step", height=280, elem_id="jobs-bpb-plot",
                               show_label=False, color_title="")
    error = gr.HTML(elem_id="jobs-error")
    with gr.Row():
        logs = gr.Textbox(label="Log", lines=12, max_lines=12, autoscroll=True, interactive=False,
                          elem_id="jobs-logs", scale=3)
        params = gr.Code(label="Parameters", language="json", interactive=False, elem_id="jobs-params",
                         scale=2, max_lines=14)

    outputs = [selected, seen, queue, picker, header, cards, loss_plot, bpb_plot, error, logs, params, cancel,
               resume]

    def refresh(selected_id, seen_state, request: gr.Request = None, explicit: bool = False):
        seen_state = dict(seen_state or {})
        requested = selected_id
        with db_session(settings) as session:
            jobs = services.list_jobs(limit=QUEUE_LIMIT, session=session)
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
                    detail = services.get_job_detail(selected_id, session=session)
                except services.NotFound:
                    selected_id, detail = (ids[0] if ids else None), None
                    if selected_id is not None:
                        detail = services.get_job_detail(selected_id, session=session)
            if detail is not None:
                same_job = seen_state.get("job") == selected_id
                finished = detail["status"] in ("succeeded", "failed", "cancelled")
                # A finished job's curves are drawn once; a live one is re-read every tick.
                if not (same_job and finished and seen_state.get("final_metrics")):
                    metrics = services.job_metrics(selected_id, session=session)
                after = seen_state.get("log_id", 0) if same_job else 0
                new_logs = services.job_logs(selected_id, after_id=after, session=session)

        out: dict[str, Any] = {c: gr.skip() for c in ("queue", "picker", "header", "cards", "loss", "bpb", "error",
                                                      "logs", "params", "cancel", "resume")}
        queue_html = jobs_table_html(jobs, selected_id)
        if queue_html != seen_state.get("queue"):
            out["queue"] = queue_html
            seen_state["queue"] = queue_html
        choices = job_choices(jobs)
        if selected_id is not None and selected_id not in ids:
            choices.append((f"#{selected_id}", selected_id))
        picker_key = json.dumps([choices, selected_id])
        if picker_key != seen_state.get("picker"):
            out["picker"] = gr.Dropdown(choices=choices, value=selected_id)
            seen_state["picker"] = picker_key

        if detail is None:
            if seen_state.get("job") is not None or "detail" not in seen_state:
                out.update(header=message_html("No job selected.", "info") if ids else "", cards="",
                           loss=plot_update(empty_plot()), bpb=plot_update(empty_plot()), error="", logs="", params="",
                           cancel=gr.Button(interactive=False), resume=gr.Button(interactive=False))
            seen_state.update(job=None, detail="none", metrics=None, log_id=0, logs=[], final_metrics=False,
                              logs_sent=False)
        else:
            if seen_state.get("job") != selected_id:
                seen_state.update(job=selected_id, detail=None, metrics=None, log_id=0, logs=[],
                                  final_metrics=False, logs_sent=False)
            status = detail["status"]
            detail_key = json.dumps([detail.get(k) for k in ("status", "progress", "error", "attempts",
                                                             "cancel_requested", "output_model_id",
                                                             "worker_host")]
                                    + [detail.get("metrics"), str(detail.get("started_at")),
                                       str(detail.get("finished_at")), status == "running" and
                                       int(elapsed_seconds(detail.get("started_at")) or 0)], default=str)
            if detail_key != seen_state.get("detail"):
                seen_state["detail"] = detail_key
                user = current_user(settings, request)
                writer = can_write(user)
                out.update(header=detail_header_html(detail), cards=metric_cards_html(detail),
                           error=error_html(detail), params=params_text(detail),
                           cancel=gr.Button(interactive=writer and status in CANCELLABLE
                                            and not detail.get("cancel_requested")),
                           resume=gr.Button(interactive=writer and status in RESUMABLE))
            if metrics is not None:
                signature = json.dumps(metrics_signature(metrics), default=str)
                if signature != seen_state.get("metrics"):
                    seen_state["metrics"] = signature
                    max_steps = (detail.get("params") or {}).get("max_steps")
                    out["loss"] = plot_update(metrics_frame(metrics, LOSS_SERIES), max_steps)
                    out["bpb"] = plot_update(metrics_frame(metrics, BPB_SERIES), max_steps)
                seen_state["final_metrics"] = status in ("succeeded", "failed", "cancelled")
            if new_logs or not seen_state.get("logs_sent"):
                lines = (seen_state.get("logs") or []) + [row["line"] for row in new_logs]
                lines = lines[-MAX_LOG_LINES:]
                seen_state["logs"] = lines
                if new_logs:
                    seen_state["log_id"] = new_logs[-1]["id"]
                seen_state["logs_sent"] = True
                out["logs"] = "\n".join(lines)
        # A tick writes the selection back only when it had to change it (none yet, or deleted): a tick
        # that started before someone picked another job must not put the old one back.
        selected_out = selected_id if (explicit or selected_id != requested) else gr.skip()
        return (selected_out, seen_state, out["queue"], out["picker"], out["header"], out["cards"], out["loss"],
                out["bpb"], out["error"], out["logs"], out["params"], out["cancel"], out["resume"])

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
            return tuple(gr.skip() for _ in outputs)
        return select_job(job_id, seen_state, request)

    tick_inputs = [selected, seen]
    timer.tick(refresh, tick_inputs, outputs, show_progress="hidden", concurrency_limit=8,
               trigger_mode="always_last", api_visibility="private")
    picker.input(select_job, [picker, seen], outputs, show_progress="hidden", api_visibility="private")
    queue.click(select_from_row, [seen], outputs, show_progress="hidden", api_visibility="private")

    def do_action(kind: str):
        def run(job_id, seen_state, request: gr.Request):
            if job_id is None:
                return (message_html("Select a job first.", "error"),) + tuple(gr.skip() for _ in outputs)
            user = current_user(settings, request)
            try:
                with db_session(settings) as session:
                    fn = services.cancel_job if kind == "cancel" else services.resume_job
                    fn(session, int(job_id), user["name"] if user else None)
            except (services.ServiceError, ValueError) as err:
                return (message_html(f"Could not {kind} job #{job_id}: {error_text(err)}", "error"),) + \
                    tuple(gr.skip() for _ in outputs)
            done = ("Cancellation requested for job #{id}: a running job saves a checkpoint and stops."
                    if kind == "cancel" else "Job #{id} queued again; it continues from its last checkpoint.")
            state = dict(seen_state or {})
            state["detail"] = None
            return (message_html(done.format(id=job_id), "ok"),) + refresh(job_id, state, request)
        return run

    for button, kind in ((cancel, "cancel"), (resume, "resume")):
        button.click(do_action(kind), [selected, seen], [action] + outputs, show_progress="hidden",
                     api_visibility="private")

    return JobsTab(settings=settings, timer=timer, selected=selected, refresh_fn=select_job,
                   refresh_inputs=tick_inputs, refresh_outputs=outputs)
