"""Estimates shown before a job is submitted: a run's size, memory and time, for any kind with one.

The figures are the kind's own estimate (`worker/kinds/<kind>/estimate.py`, reached through
`worker.jobs.lifecycle.preview`), the same function its submit check calls: the params are checked by the
kind's declared settings (a value submit refuses is refused here with the same field and message), and the
memory shown is the figure the check compares with what the workers have. The time is what the workers measured
for the run's shape (`worker.jobs.throughput.run_time`: measured, fitted from their probes, or assumed when no
worker has probed yet), the figure a submitted job records and its card compares with what it took.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from web.services.common import InvalidInput, reading
from worker.jobs.throughput import ASSUMED_UTILISATION, estimate_peak_flops  # noqa: F401  (web.services exports)


def check_run(kind: str, params: dict, session: Session | None = None) -> None:
    """Every check submitting a job of `kind` with `params` makes (declared bounds, the dataset and models it
    names, the kind's own cross-field checks: schedule, memory, devices), storing nothing: what a Train form asks
    before it submits, so a refusal is said under the field it names. InvalidInput names that param."""
    from worker.jobs.lifecycle import JobParamsError, validate_params

    if not isinstance(params, dict):
        raise InvalidInput("params must be an object of parameter names to values", field="params")
    try:
        with reading(session) as s:
            validate_params(s, kind, params)
    except JobParamsError as error:
        raise InvalidInput(f"{error.field}: {error.message}", field=error.field) from None


def estimate_run(kind: str, params: dict, session: Session | None = None) -> dict | None:
    """The kind's estimate of a job with `params` (what a Train form holds so far), or None when the kind has
    none or the params leave nothing to estimate from (e.g. a model row without its shape).

    Returns the kind's figures (e.g. params_count, tokens_per_step, config, head_share) with memory_bytes (the
    peak the submit check compares), worker_memory_bytes / worker_memory_source (what it compares it with),
    device, and the time (`run_time`): est_seconds (training steps and evaluations; starting the job and
    tokenizing the data on first use are not counted), step_seconds, time_source ("measured", "fitted" or
    "assumed") and time_basis (in words). InvalidInput names the param that is wrong.
    """
    from db.settings import get_settings
    from worker.jobs.fit import worker_memory
    from worker.jobs.lifecycle import JobParamsError, preview
    from worker.jobs.throughput import run_time

    if not isinstance(params, dict):
        raise InvalidInput("params must be an object of parameter names to values", field="params")
    try:
        with reading(session) as s:
            checked, run = preview(s, kind, params)
    except JobParamsError as error:
        raise InvalidInput(f"{error.field}: {error.message}", field=error.field) from None
    if run is None:
        return None
    settings = get_settings()
    available, source = worker_memory(run.device_type, checked, settings)
    return {**run.figures, "memory_bytes": run.memory.total, "worker_memory_bytes": available,
            "worker_memory_source": source, "device": run.device_type, **run_time(run, checked, settings)}
