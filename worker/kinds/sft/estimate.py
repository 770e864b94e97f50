"""The `sft` kind's estimate: a run's trainable parameters, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check (spec.py's `check`) both call, so the form
shows the figure the check compares with what the workers have. One conversation is one sequence, its loss on
the answers (`worker.jobs.fine_tuning_estimate` says what that means for the time).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.settings import Settings
from llm.sft_config import SFT_DEFAULTS
from worker.jobs.fine_tuning_estimate import SFT_WORK, fine_tuning_estimate
from worker.jobs.fit import RunEstimate


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate | None:
    return fine_tuning_estimate(session, params, settings, SFT_DEFAULTS, SFT_WORK)
