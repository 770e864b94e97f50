"""Driving a job by hand in the job-layer tests: claim it as a worker would, and read its log lines."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import JobLog
from worker.jobs import lifecycle as jobs


def claim(session: Session, job_id: int) -> int:
    """Claim the next job (it must be `job_id`) for a worker called "test-host"; returns the attempt number."""
    claimed = jobs.claim_next_job(session, "test-host")
    assert claimed.id == job_id
    return claimed.attempts


def log_lines(session: Session, job_id: int) -> list[str]:
    """The job's log lines, oldest first."""
    return list(session.scalars(select(JobLog.line).where(JobLog.job_id == job_id).order_by(JobLog.id)))
