"""The `dpo` kind's estimate: a run's trainable parameters, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check (`worker.kinds.reward.spec.preference_check`) both
call. A preference pair is two sequences in one forward (`worker.jobs.fine_tuning_estimate` says what each step
computes).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.settings import Settings
from llm.dpo_config import DPO_DEFAULTS
from worker.jobs.fine_tuning_estimate import DPO_WORK, fine_tuning_estimate
from worker.jobs.fit import RunEstimate


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate | None:
    return fine_tuning_estimate(session, params, settings, DPO_DEFAULTS, DPO_WORK)
