"""The `grpo` kind's estimate: a run's trainable parameters, FLOPs and peak memory before it is queued.

The one function the Train form's preview and the submit check (spec.py's `check`) both call. A prompt is G
sequences (its answers) in one forward, and with beta > 0 the reference (the adapter off, or a frozen copy of the
start with all weights) scores them for the KL (`worker.jobs.fine_tuning_estimate`). Sampling the answers is not in
the figure: like data loading for the other kinds, it adds time, not memory (the KV cache of G answers is far below
the training step's activations). Beta left empty is the default for what scores the answers (`resolved_beta`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.settings import Settings
from llm.grpo_config import GRPO_DEFAULTS, resolved_beta
from worker.jobs.fine_tuning_estimate import StepWork, fine_tuning_estimate
from worker.jobs.fit import RunEstimate


def estimate(session: Session, params: dict[str, Any], settings: Settings) -> RunEstimate | None:
    # The KL's reference (beta > 0): the adapter off (LoRA) or a frozen copy of the start (all weights), both a
    # forward without gradients of the G answers each step.
    beta = resolved_beta(params.get("beta"), params.get("reward_model_id") is not None)
    reference = params["num_generations"] if beta > 0 else 0
    work = StepWork(sequences_per_example=params["num_generations"], lora_forward_sequences=reference,
                    full_forward_sequences=reference)
    return fine_tuning_estimate(session, params, settings, GRPO_DEFAULTS, work)
