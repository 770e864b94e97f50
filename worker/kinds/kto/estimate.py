"""The `kto` kind's estimate: a run's trainable parameters, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check both call. A KTO step is DPO's in shape: each example
is two sequences (its answer with gradients, another answer to its prompt for the KL estimate, without) and a LoRA run
also runs the reference (the adapter off), so DPO's step work is used (`worker.jobs.fine_tuning_estimate`). It errs
high on memory: the mismatched rows keep no activations for a backward pass.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.settings import Settings
from llm.kto_config import KTO_DEFAULTS
from worker.jobs.fine_tuning_estimate import DPO_WORK, fine_tuning_estimate
from worker.jobs.fit import RunEstimate

KTO_WORK = DPO_WORK


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate | None:
    return fine_tuning_estimate(session, params, settings, KTO_DEFAULTS, KTO_WORK)
