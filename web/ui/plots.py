"""Pure helpers that shape data for the UI: plot frames, progress bars, number formatting.

Nothing here touches the database, Gradio or torch, so every function is unit-tested on its
own (tests/web/test_ui_units.py). The tabs call these with what `web.services` returns.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from llm.stats import COUNT_NAME

# Colours by job status, used by badges and progress bars (readable on light and dark themes).
STATUS_COLORS: dict[str, str] = {
    "queued": "#64748b",
    "running": "#2563eb",
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#d97706",
}

# Metric names the training loop reports (docs/architecture.md, on_metrics).


def field(obj: Any, name: str, default: Any = None) -> Any:
    """Read `name` from a dict or an object (ORM row, dataclass) alike."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def enum_value(value: Any) -> Any:
    """`JobStatus.running` -> "running"; plain values pass through."""
    return getattr(value, "value", value)


# ----------------------------------------------------------------------------- number formatting

def human_count(n: float | int | None) -> str:
    """1234 -> "1.23K", 1_500_000 -> "1.50M" (parameter counts, tokens)."""
    if n is None:
        return "—"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def human_bytes(n: float | int | None) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def human_duration(seconds: float | int | None) -> str:
    """75 -> "1m 15s", 3725 -> "1h 2m", 0.4 -> "<1s"."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    seconds = float(seconds)
    if seconds < 1:
        return "<1s"
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


def format_metric(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if name == "mfu":
        # The loop reports MFU as a fraction; show a percentage.
        return f"{value * 100:.2f}%" if value <= 1.5 else f"{value:.2f}%"
    if name in ("tokens_per_s", "tokens/s"):
        return f"{human_count(value)}/s" if value >= 1000 else f"{value:.0f}/s"
    if name == "lr" or name.endswith("_lr"):  # a learning rate: 0.0001 would hide 6.3e-05
        return f"{value:.2e}"
    if name == "progress":
        return f"{value * 100:.0f}%"
    if abs(value) >= 1000:
        return human_count(value)
    return f"{value:.4f}"


def as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def elapsed_seconds(started: Any, finished: Any = None, now: datetime | None = None) -> float | None:
    start = as_datetime(started)
    if start is None:
        return None
    end = as_datetime(finished) or now or datetime.now(timezone.utc)
    return max(0.0, (end - start).total_seconds())


# Below this much progress the rate is mostly start-up (data, compile, first eval): no estimate yet.
ETA_MIN_PROGRESS = 0.01


def eta_seconds(progress: Any, elapsed: float | None) -> float | None:
    """Time left if the rest goes at the pace so far: elapsed × (1 − p) / p; None when unknown."""
    try:
        fraction = float(progress)
    except (TypeError, ValueError):
        return None
    if elapsed is None or not math.isfinite(fraction) or not ETA_MIN_PROGRESS <= fraction < 1:
        return None
    return float(elapsed) * (1.0 - fraction) / fraction


# ----------------------------------------------------------------------------- metrics → plots

def metrics_frame(records: Iterable[Mapping[str, Any]], series: Mapping[str, str]) -> pd.DataFrame:
    """Long-format frame (step, value, series) for a gr.LinePlot with `color="series"`.

    `records` are {step, name, value} rows (web.services.job_metrics); `series` maps the metric
    names to plot to their legend labels. NaN/inf values are dropped (a diverged step would
    otherwise blow up the axis), and a metric reported twice for a step keeps the last value
    (a resumed run re-logs the step it resumed from).
    """
    rows: dict[tuple[str, int], float] = {}
    for rec in records:
        # Plain dicts are what the services give (tens of thousands for a long run): read them directly.
        name, step, value = ((rec.get("name"), rec.get("step"), rec.get("value")) if isinstance(rec, dict)
                             else (field(rec, "name"), field(rec, "step"), field(rec, "value")))
        if name not in series or value is None or step is None:
            continue
        value = float(value)
        if not math.isfinite(value):
            continue
        rows[(series[name], int(step))] = value
    frame = pd.DataFrame(
        [(step, value, label) for (label, step), value in rows.items()], columns=["step", "value", "series"])
    if not frame.empty:
        frame = frame.sort_values(["series", "step"], kind="stable").reset_index(drop=True)
    return frame.astype({"step": "int64", "value": "float64", "series": "object"})


def metrics_frame_along(records: Iterable[Mapping[str, Any]], series: Mapping[str, str], x: str,
                        log_x: bool = False) -> pd.DataFrame:
    """`metrics_frame` against another metric instead of the step: each point's x is the value metric `x` has at
    its step (the range test's loss against its learning rate), log10 of it with `log_x`; points whose step has
    no such value are left out. The column keeps its name, "step": the chart's x field."""
    frame = metrics_frame(records, series)
    along = {}
    for rec in records:
        name, step, value = ((rec.get("name"), rec.get("step"), rec.get("value")) if isinstance(rec, dict)
                             else (field(rec, "name"), field(rec, "step"), field(rec, "value")))
        if name == x and step is not None and value is not None and math.isfinite(value) and (value > 0 or not log_x):
            along[int(step)] = math.log10(value) if log_x else float(value)
    frame = frame[frame["step"].isin(along)].copy()
    frame["step"] = frame["step"].map(along).astype("float64")
    return frame.sort_values(["series", "step"], kind="stable").reset_index(drop=True)


# A chart is at most this many points per series: the browser draws a few hundred pixels across, and a
# 5,000-step run's every point made each redraw ship ~200 KB and lay out 25,000 SVG marks.
MAX_POINTS_PER_SERIES = 400


def thin_curves(frame: pd.DataFrame, max_points: int = MAX_POINTS_PER_SERIES) -> pd.DataFrame:
    """At most about `max_points` rows per series, keeping the curve's shape: each series' steps are cut into
    max_points / 2 buckets and each bucket keeps its lowest and highest value (a spike stays visible), plus
    the first and the last point. Series short enough are kept whole."""
    if frame.empty:
        return frame
    kept = []
    for _, part in frame.groupby("series", sort=False):
        if len(part) <= max_points:
            kept.append(part)
            continue
        buckets = (part["step"] - part["step"].iloc[0]) * (max_points // 2) // (
            part["step"].iloc[-1] - part["step"].iloc[0] + 1)
        values = part["value"].groupby(buckets)
        chosen = set(values.idxmin()) | set(values.idxmax()) | {part.index[0], part.index[-1]}
        kept.append(part.loc[sorted(chosen)])
    return pd.concat(kept).reset_index(drop=True)


def needs_markers(frame: pd.DataFrame) -> bool:
    """Whether a chart must draw points: a line through one point draws nothing (one evaluation so far)."""
    return not frame.empty and int(frame.groupby("series")["step"].count().min()) < 2


# Vega's category colours: a series keeps its colour from one update to the next.
SERIES_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d",
                  "#ff9da6", "#bab0ac")


def series_colours(frame: pd.DataFrame, order: Sequence[str] = ()) -> dict[str, str]:
    """{series: colour} for the series `frame` holds, coloured by their place in `order` (then by first
    appearance). A LinePlot is given this as its color_map with every update: Gradio's plot fixes its colour
    scale to the series present when it last built its chart, and rebuilds only when a setting such as the
    colour map changes, so a series that arrived later (the first evaluation, a run added to a comparison)
    was not drawn at all."""
    present = list(dict.fromkeys(frame["series"])) if not frame.empty else []
    ranked = [label for label in order if label in present] + [label for label in present if label not in order]
    return {label: SERIES_COLOURS[(list(order).index(label) if label in order else index) % len(SERIES_COLOURS)]
            for index, label in enumerate(ranked)}


def line_plot_value(frame: pd.DataFrame) -> dict:
    """What a gr.LinePlot sends the browser for `frame`, with the mark chosen here: "point" while a series has
    a single point (a line through one point draws nothing: the first evaluation of every run was invisible),
    "line" otherwise.

    Handlers return this as the plot's value: Gradio rebuilds a component from its constructor arguments for
    every update, so a mark chosen in an overridden postprocess is lost, while a value that is already the
    plot's data passes through untouched."""
    split = frame.to_dict(orient="split")  # Python numbers, not numpy scalars
    return {"columns": list(split["columns"]), "data": [list(row) for row in split["data"]],
            "datatypes": {column: "quantitative" if pd.api.types.is_numeric_dtype(frame[column]) else "nominal"
                          for column in frame.columns},
            "mark": "point" if needs_markers(frame) else "line"}


def latest_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, float]]:
    """{name: (step, value)} of the highest step seen for each metric name."""
    latest: dict[str, tuple[int, float]] = {}
    for rec in records:
        name, step, value = field(rec, "name"), field(rec, "step"), field(rec, "value")
        if name is None or step is None or value is None:
            continue
        step = int(step)
        if name not in latest or step >= latest[name][0]:
            latest[name] = (step, float(value))
    return latest


def metrics_signature(records: Sequence[Mapping[str, Any]]) -> tuple:
    """Cheap change detector so the Jobs timer redraws plots only when new points arrive."""
    if not records:
        return (0,)
    last = records[-1]
    return (len(records), field(last, "step"), field(last, "name"), field(last, "value"))


# ----------------------------------------------------------------------------- documents → histogram

def _edge_label(n: float) -> str:
    n = int(n)
    if n >= 1_000_000:
        return f"{n / 1_000_000:g}M"
    if n >= 1000:
        return f"{n / 1000:g}K"
    return str(n)


def histogram_frame(summary: Mapping[str, Any] | None) -> pd.DataFrame:
    """One row per bin (bin label, low, high, documents) from a dataset's `length_histogram`.

    `summary` is what web.services stores in Dataset.stats["length_histogram"]:
    {"edges": [e0, e1, ...], "counts": [c0, ...]} with bin i covering [e_i, e_{i+1}) characters
    (power-of-two edges). Labels read "64–128"; malformed input gives an empty frame.
    """
    columns = ["bin", "low", "high", "documents"]
    edges = list(field(summary, "edges") or [])
    counts = list(field(summary, "counts") or [])
    if len(edges) < 2 or len(counts) != len(edges) - 1:
        return pd.DataFrame(columns=columns)
    rows = [{"bin": f"{_edge_label(lo)}–{_edge_label(hi)}", "low": lo, "high": hi, "documents": int(c)}
            for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return pd.DataFrame(rows, columns=columns)


def histogram_figure(summary: Mapping[str, Any] | None, title: str = "Document length (characters, log₂ bins)"):
    """A matplotlib bar chart of the document-length histogram, with median and mean noted."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    frame = histogram_frame(summary)
    fig = Figure(figsize=(7.0, 2.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if frame.empty:
        ax.text(0.5, 0.5, "no documents", ha="center", va="center", transform=ax.transAxes)
    else:
        positions = list(range(len(frame)))
        ax.bar(positions, frame["documents"], color="#6366f1", edgecolor="white", width=0.9)
        ax.set_xticks(positions, frame["bin"], rotation=35, ha="right")
        notes = [f"{key} {field(summary, key):,.0f}" for key in ("min", "median", "mean", "max")
                 if isinstance(field(summary, key), (int, float))]
        if notes:
            title = f"{title}\n{' · '.join(notes)}"
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("documents", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def token_histograms_figure(stats: Mapping[str, Any]):
    """Tokens per item for each part of a chat / preference / prompts dataset (user, assistant, system;
    prompt, chosen, rejected), one small chart each, side by side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    histograms = stats.get("token_histograms") or {}
    parts = [part for part in ("system", "user", "assistant", "prompt", "chosen", "rejected") if part in histograms]
    fig = Figure(figsize=(7.0, 2.9), dpi=100, layout="constrained")
    axes = fig.subplots(1, max(len(parts), 1), squeeze=False)[0]
    for ax, part in zip(axes, parts):
        summary = histograms[part]
        frame = histogram_frame(summary)
        positions = list(range(len(frame)))
        ax.bar(positions, frame["documents"], color=PART_COLOURS.get(part, "#6366f1"), edgecolor="white", width=0.9)
        ax.set_xticks(positions, frame["bin"], rotation=45, ha="right")
        ax.set_title(f"{part} tokens (median {summary.get('median', 0):,.0f})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel(COUNT_NAME.get(stats.get("kind"), "items"), fontsize=9)
    return fig


PART_COLOURS = {"system": "#94a3b8", "user": "#0ea5e9", "assistant": "#6366f1", "prompt": "#0ea5e9",
                "chosen": "#16a34a", "rejected": "#dc2626"}
CONVERSATION_KINDS = tuple(COUNT_NAME)


def dataset_stat_cards(dataset: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (label, value) cards shown for a dataset: documents, size, what cleaning removed, lengths;
    for chat / preference / prompt datasets: items, tokens, tokens per part."""
    stats = field(dataset, "stats") or {}
    if stats.get("kind") in CONVERSATION_KINDS:
        count_name = COUNT_NAME[stats["kind"]]
        cards = [(count_name, f"{stats.get('items', 0):,}"), ("GPT-2 tokens", human_count(stats.get("tokens"))),
                 ("size", human_bytes(field(dataset, "size_bytes") or stats.get("bytes")))]
        cards += [(f"{part} tokens", human_count(total)) for part, total in (stats.get("tokens_by_part") or {}).items()]
        turns = stats.get("turns_histogram") or {}
        if turns.get("median"):
            cards.append(("median turns", f"{turns['median']:,.0f}"))
        return cards
    hist = stats.get("length_histogram") or {}
    cards = [
        ("documents", f"{stats['documents']:,}" if isinstance(stats.get("documents"), int) else "—"),
        ("size", human_bytes(field(dataset, "size_bytes") or stats.get("bytes"))),
        ("format", str(field(dataset, "format") or stats.get("format") or "—")),
        ("duplicates removed", f"{stats.get('duplicates_removed', 0):,}"),
        ("empty removed", f"{stats.get('empty_removed', 0):,}"),
    ]
    if stats.get("undecodable_removed"):
        cards.append(("undecodable removed", f"{stats['undecodable_removed']:,}"))
    if hist.get("median") is not None and hist.get("edges"):
        cards.append(("median length", f"{hist['median']:,.0f} chars"))
    return cards


# ----------------------------------------------------------------------------- HTML pieces

def progress_bar_html(progress: float | None, status: str = "running", label: str | None = None) -> str:
    """A small progress bar: coloured by status, width clamped to 0..100 %, accessible.

    Finished-successfully jobs show 100 % whatever the last reported progress was.
    """
    status = str(enum_value(status) or "queued")
    try:
        frac = float(progress or 0.0)
    except (TypeError, ValueError):
        frac = 0.0
    if math.isnan(frac):
        frac = 0.0
    frac = min(1.0, max(0.0, frac))
    if status == "succeeded":
        frac = 1.0
    pct = round(frac * 100)
    color = STATUS_COLORS.get(status, STATUS_COLORS["queued"])
    text = html.escape(label if label is not None else f"{pct}%")
    stripes = " wb-bar-live" if status == "running" else ""
    return (
        f'<div class="wb-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="{pct}" '
        'style="position:relative;height:16px;min-width:90px;border-radius:8px;'
        'background:rgba(100,116,139,.18);overflow:hidden">'
        f'<div class="wb-bar-fill{stripes}" style="width:{pct}%;height:100%;background:{color};border-radius:8px;'
        f'transition:width .6s ease"></div>'
        f'<span style="position:absolute;inset:0;display:flex;align-items:center;justify-content:center;'
        f'font-size:11px;font-weight:600;color:var(--body-text-color,#111)">{text}</span></div>'
    )


def status_badge_html(status: Any) -> str:
    status = str(enum_value(status) or "queued")
    color = STATUS_COLORS.get(status, STATUS_COLORS["queued"])
    return (f'<span class="wb-badge wb-{html.escape(status)}" style="display:inline-block;padding:1px 8px;'
            f'border-radius:999px;font-size:12px;font-weight:600;color:#fff;background:{color}">'
            f'{html.escape(status)}</span>')


def _owner_name(owner: Any) -> str | None:
    """services.list_jobs gives the owner's name; an ORM row gives a User."""
    if owner is None or isinstance(owner, str):
        return owner
    return field(owner, "name")


def job_name(job: Any) -> str | None:
    """The name a job goes by: the one people gave it (a rename), else the name its form gave what it makes
    (params["name"]: the model or tokenizer), else None."""
    params = field(job, "params") or {}
    return field(job, "name") or (params.get("name") if isinstance(params, Mapping) else None) or None


def job_title(job: Any) -> str:
    """What a job is called: its name, else its kind."""
    return str(job_name(job) or enum_value(field(job, "kind")) or "")


def job_row(job: Any) -> dict[str, Any]:
    """Normalise a job (ORM row or dict from web.services) into the fields the queue shows."""
    status = str(enum_value(field(job, "status")) or "queued")
    created = as_datetime(field(job, "created_at"))
    return {
        "id": field(job, "id"),
        "name": job_name(job) or "",
        "kind": str(enum_value(field(job, "kind")) or ""),
        "status": status,
        "progress": float(field(job, "progress") or 0.0),
        "owner": _owner_name(field(job, "owner")) or field(job, "owner_name") or "",
        "created": created.strftime("%Y-%m-%d %H:%M") if created else "",
        "elapsed": elapsed_seconds(field(job, "started_at"), field(job, "finished_at"))
        if field(job, "started_at") else None,
        "error": field(job, "error"),
    }


# What an empty workbench says, in the queue and the job detail.
NO_JOBS = ("No jobs yet — train a model in Train, or start with Train ▸ Demo: the whole loop on generated data in "
           "a few minutes.")


def jobs_table_html(jobs: Sequence[Any], selected_id: int | None = None) -> str:
    """The job queue as an HTML table with progress bars; rows carry data-job for click-to-select."""
    if not jobs:
        return f'<div class="wb-empty" style="padding:18px;text-align:center;opacity:.7">{NO_JOBS}</div>'
    head = ("<thead><tr><th>#</th><th>name</th><th>kind</th><th>status</th><th style='width:30%'>progress</th>"
            "<th>owner</th><th>created</th><th>elapsed</th></tr></thead>")
    body = []
    for job in jobs:
        row = job_row(job)
        sel = " wb-selected" if selected_id is not None and row["id"] == selected_id else ""
        name = (f'<b class="wb-job-name">{html.escape(row["name"])}</b>' if row["name"]
                else '<span style="opacity:.5">—</span>')
        body.append(
            f'<tr class="wb-job-row{sel}" data-job="{row["id"]}" title="Show job #{row["id"]}">'
            f'<td>{row["id"]}</td><td>{name}</td><td>{html.escape(row["kind"])}</td>'
            f'<td>{status_badge_html(row["status"])}</td>'
            f'<td>{progress_bar_html(row["progress"], row["status"])}</td>'
            f'<td>{html.escape(str(row["owner"]))}</td><td>{html.escape(row["created"])}</td>'
            f'<td>{human_duration(row["elapsed"]) if row["elapsed"] is not None else "—"}</td></tr>'
        )
    return f'<table class="wb-jobs">{head}<tbody>{"".join(body)}</tbody></table>'


def runs_frame(curves: Mapping[str, Iterable[Mapping[str, Any]]], metric: str) -> pd.DataFrame:
    """One metric of several runs in one long frame (step, value, series = the run's label), for overlaying
    their curves: `curves` maps each run's label to its {step, name, value} records."""
    frames = [metrics_frame(records, {metric: label}) for label, records in curves.items()]
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else metrics_frame([], {})


EVENT_WORDS = {"submitted": "submitted", "cancel_requested": "asked to cancel", "cancelled": "cancelled",
               "resumed": "resumed", "renamed": "renamed", "requeued": "requeued", "started": "started",
               "succeeded": "succeeded", "failed": "failed"}


def events_html(events: Sequence[Mapping[str, Any]]) -> str:
    """Who changed a job and when, oldest first: "12:03 submitted by alice", "… requeued by the system"."""
    if not events:
        return ""
    items = []
    for event in events:
        when = as_datetime(field(event, "at"))
        action = str(field(event, "action") or "")
        who = field(event, "user")
        detail = field(event, "detail")
        items.append(
            f'<li><span style="opacity:.65">{when.strftime("%Y-%m-%d %H:%M:%S") if when else ""}</span> '
            f'{html.escape(EVENT_WORDS.get(action, action.replace("_", " ")))} by '
            f'<b>{html.escape(str(who)) if who else "the system"}</b>'
            f'{" — " + html.escape(str(detail)) if detail else ""}</li>')
    return ('<details class="wb-events" open><summary style="cursor:pointer;font-size:13px;font-weight:600">'
            f'History ({len(items)})</summary><ul style="margin:4px 0 0 0;font-size:12px">{"".join(items)}</ul>'
            '</details>')


def stat_cards_html(cards: Sequence[tuple[str, str]]) -> str:
    """A row of small label/value cards (dataset stats, latest job metrics, estimates)."""
    items = "".join(
        f'<div class="wb-card" style="flex:1 1 110px;padding:8px 12px;border-radius:10px;'
        f'border:1px solid var(--border-color-primary,#e5e7eb);background:var(--block-background-fill,#fff)">'
        '<div style="font-size:11px;text-transform:uppercase;letter-spacing:.04em;opacity:.65">'
        f'{html.escape(label)}</div>'
        f'<div class="wb-card-value" style="font-size:18px;font-weight:650">{html.escape(value)}</div></div>'
        for label, value in cards
    )
    return f'<div class="wb-cards" style="display:flex;flex-wrap:wrap;gap:8px">{items}</div>'


def message_html(text: str, kind: str = "info") -> str:
    """A coloured notice: kind is "ok", "error", "info" or "warn". Newlines are kept."""
    palette = {
        "ok": ("#16a34a", "rgba(22,163,74,.10)"),
        "error": ("#dc2626", "rgba(220,38,38,.10)"),
        "warn": ("#d97706", "rgba(217,119,6,.10)"),
        "info": ("#2563eb", "rgba(37,99,235,.08)"),
    }
    border, bg = palette.get(kind, palette["info"])
    body = html.escape(text).replace("\n", "<br>")
    return (f'<div class="wb-msg wb-msg-{kind}" style="border-left:4px solid {border};background:{bg};'
            f'padding:8px 12px;border-radius:6px;white-space:normal">{body}</div>')


# Scoped CSS for the jobs table (gr.HTML css_template scopes it to the component).
JOBS_TABLE_CSS = """
table.wb-jobs { width: 100%; border-collapse: collapse; font-size: 13px; border: none; margin: 0; }
table.wb-jobs tr, table.wb-jobs thead, table.wb-jobs tbody { border: none; }
table.wb-jobs th, table.wb-jobs td { border: none; border-bottom: 1px solid var(--border-color-primary, #e5e7eb);
  padding: 6px 8px; vertical-align: middle; background: transparent; }
table.wb-jobs th { text-align: left; font-weight: 600; opacity: .7; }
table.wb-jobs tr.wb-job-row { cursor: pointer; }
table.wb-jobs tr.wb-job-row:hover { background: rgba(99,102,241,.07); }
table.wb-jobs tr.wb-selected { background: rgba(99,102,241,.14); }
.wb-bar-live { background-image: linear-gradient(45deg, rgba(255,255,255,.22) 25%, transparent 25%,
  transparent 50%, rgba(255,255,255,.22) 50%, rgba(255,255,255,.22) 75%, transparent 75%, transparent);
  background-size: 16px 16px; animation: wb-stripes 1s linear infinite; }
@keyframes wb-stripes { from { background-position: 16px 0; } to { background-position: 0 0; } }
"""
