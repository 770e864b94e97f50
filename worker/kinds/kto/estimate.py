"""The `kto` kind's estimate: a run's trainable parameters, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check both call. A KTO example is one trained sequence (its
answer); with the loss "kto" a second, another prompt's answer (the KL reference point), goes forward without
gradients. The reference is the adapter off (LoRA: a forward without gradients of both rows each step) or computed once
before training (all weights), as DPO's (`worker.jobs.fine_tuning_estimate`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.settings import Settings
from llm.kto_config import KTO_DEFAULTS
from worker.jobs.fine_tuning_estimate import StepWork, fine_tuning_estimate
from worker.jobs.fit import RunEstimate


def kto_work(loss_type: str) -> StepWork:
    """The loss "kto" adds the mismatched row (forward only, and to the reference); "apo_zero" has none."""
    rows = 2 if loss_type == "kto" else 1
    return StepWork(sequences_per_example=1, lora_forward_sequences=rows + rows - 1, full_forward_sequences=rows - 1,
                    stored_reference_sequences=rows, watched=True)


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate | None:
    return fine_tuning_estimate(session, params, settings, KTO_DEFAULTS, kto_work(params.get("loss_type", "kto")))
