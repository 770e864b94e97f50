"""Estimates shown before a job is submitted: a run's size, memory and a rough time, for any kind with one.

The figures are the kind's own estimate (`worker/kinds/<kind>/estimate.py`, reached through
`worker.jobs.lifecycle.preview`), the same function its submit check calls: the params are checked by the
kind's declared settings (a value submit refuses is refused here with the same field and message), and the
memory shown is the figure the check compares with what the workers have. This module only adds what a
person planning a run wants beside it: the time, from the run's FLOPs and this machine's peak.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from web.services.common import InvalidInput, reading

# Share of the peak matmul FLOP/s a training step really achieves. Small models spend much of a
# step outside big matmuls (optimizer, layer norms, Python), so CPU runs of the tiny preset reach
# well under half of the matmul peak; 0.3 is a middle-of-the-road guess for planning, not a promise.
# The estimate reports the factor it used so the UI can show it.
ASSUMED_UTILISATION = {"cpu": 0.3, "cuda": 0.4}


_PEAK_FLOPS_CACHE: dict[str, float] = {}


def estimate_peak_flops(device_type: str) -> float:
    """Peak FLOP/s for estimates, measured once per process (the Chat tab measures it before it limits
    this process's torch threads, see web.services.model_cache).

    GPUs: the data-sheet number when known (`llm.device.peak_flops`); a worker's GPU that this process
    cannot see: the slowest data-sheet figure known, so the time errs long. CPUs: a 1024 x 1024 float32
    matmul, which reaches the same FLOP/s as llm.device's 2048 one within a few percent here but
    costs a fraction of a second instead of seconds, so the first estimate in the UI stays quick.
    """
    if device_type not in _PEAK_FLOPS_CACHE:
        import torch

        from llm.device import KNOWN_PEAK_FLOPS, measure_matmul_peak_flops, peak_flops

        if device_type == "cuda":
            _PEAK_FLOPS_CACHE[device_type] = (peak_flops(device_type) if torch.cuda.is_available()
                                              else min(flops for _, flops in KNOWN_PEAK_FLOPS))
        else:
            _PEAK_FLOPS_CACHE[device_type] = measure_matmul_peak_flops("cpu", size=1024)
    return _PEAK_FLOPS_CACHE[device_type]


def estimate_run(kind: str, params: dict, session: Session | None = None) -> dict | None:
    """The kind's estimate of a job with `params` (what a Train form holds so far), or None when the kind has
    none or the params leave nothing to estimate from (e.g. a model row without its shape).

    Returns the kind's figures (e.g. params_count, tokens_per_step, config) with memory_bytes (the peak the
    submit check compares), worker_memory_bytes / worker_memory_source (what it compares it with), device,
    peak_flops, utilisation and est_seconds = the run's FLOPs / (peak FLOP/s x ASSUMED_UTILISATION); data
    loading and evaluation are not counted. InvalidInput names the param that is wrong.
    """
    from db.settings import get_settings
    from worker.jobs.fit import worker_memory
    from worker.jobs.lifecycle import JobParamsError, preview

    if not isinstance(params, dict):
        raise InvalidInput("params must be an object of parameter names to values", field="params")
    try:
        with reading(session) as s:
            checked, run = preview(s, kind, params)
    except JobParamsError as error:
        raise InvalidInput(f"{error.field}: {error.message}", field=error.field) from None
    if run is None:
        return None
    available, source = worker_memory(run.device_type, checked, get_settings())
    peak = estimate_peak_flops(run.device_type)
    utilisation = ASSUMED_UTILISATION[run.device_type]
    return {**run.figures, "memory_bytes": run.memory.total, "worker_memory_bytes": available,
            "worker_memory_source": source, "device": run.device_type, "peak_flops": peak,
            "utilisation": utilisation, "est_seconds": run.flops / (peak * utilisation)}
