"""What the Jobs tab says about device slots (worker/jobs/devices.py): the devices a job asks for or holds, and
each live worker's slots with the running job holding each (`web.services.worker_devices`)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def job_devices_text(detail: Mapping[str, Any]) -> str | None:
    """"devices 0, 1" for a job that got slots (running, or where it last ran), "asks for 2 devices" for a queued
    one on more than one; None for a queued 1-device job (every worker has one)."""
    assigned = detail.get("assigned_devices")
    if assigned and detail.get("status") != "queued":
        return f"device{'s' if len(assigned) != 1 else ''} {html.escape(', '.join(map(str, assigned)))}"
    asked = detail.get("devices") or 1
    return f"asks for {asked} devices" if asked > 1 else None


def workers_html(workers: Sequence[Mapping[str, Any]]) -> str:
    """One line per worker seen: its name, then each slot with the job holding it ("#12") or "free"; a worker that
    stopped beating is shown as down. Empty when no worker was seen."""
    if not workers:
        return ""
    lines = []
    for worker in workers:
        jobs = worker.get("device_jobs") or {}
        slots = " · ".join(
            f'<span class="wb-slot" data-slot="{html.escape(str(slot))}">{html.escape(str(slot))} '
            + (f'<b class="wb-slot-job">#{int(job)}</b>' if job is not None
               else '<span style="opacity:.6">free</span>') + "</span>"
            for slot, job in jobs.items())
        free = sum(job is None for job in jobs.values())
        state = "" if worker.get("alive", True) else ' <b style="color:#b91c1c">down</b>'
        lines.append(f'<div class="wb-worker" data-node="{html.escape(str(worker.get("node")))}">'
                     f'<b>{html.escape(str(worker.get("node")))}</b>{state}: {free} of {len(jobs)} '
                     f'device{"s" if len(jobs) != 1 else ""} free — {slots}</div>')
    return ('<div class="wb-workers" id="jobs-workers" style="font-size:12px;margin-top:8px;opacity:.85">'
            f'<div style="font-weight:600">Workers</div>{"".join(lines)}</div>')
