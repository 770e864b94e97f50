"""The `grpo` kind's estimate: a run's trainable parameters, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check (spec.py's `check`) both call. A prompt is G
sequences (its answers) in one forward, and a LoRA run also scores them with the adapter switched off for the KL
(`worker.jobs.fine_tuning_estimate`). Sampling the answers is not in the figure: like data loading for the other
kinds, it adds time, not memory (the KV cache of G answers is far below the training step's activations).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.settings import Settings
from llm.grpo_config import GRPO_DEFAULTS
from worker.jobs.fine_tuning_estimate import StepWork, fine_tuning_estimate
from worker.jobs.fit import RunEstimate


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate | None:
    work = StepWork(sequences_per_example=params["num_generations"], reference_forward=params.get("beta", 0) > 0)
    return fine_tuning_estimate(session, params, settings, GRPO_DEFAULTS, work)
