"""The `sft` kind's declaration: supervised fine-tuning of a base (or earlier SFT) model on a chat dataset.

Every weight, or a LoRA adapter through peft (an adapter directory that loads onto its parent model): the
`method`, whose default "auto" is resolved at submit from the model's size (`llm.train_config.choose_method`).
The loss is on the assistant's tokens only (llm/chat.py's mask).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import DatasetKind, Model, ModelKind
from db.settings import Settings
from llm.params import settings_of
from llm.sft_config import SFT_DEFAULTS, SFTConfig
from worker.jobs.fit import check_memory, check_schedule
from worker.jobs.params import JobParamsError, fine_tuning_loop_params, resolve_fine_tuning
from worker.jobs.spec import DATASET_ID, MODEL_ID, MODEL_NAME, JobKindSpec, TrainFormNames
from worker.kinds.sft.card import METRIC_CARDS, PLOTS, REPORT_CARD
from worker.kinds.sft.estimate import estimate
from worker.kinds.sft.handler import run

PARAMS = {
    "model_id": MODEL_ID,
    "dataset_id": DATASET_ID,
    "name": MODEL_NAME,
    **settings_of(SFTConfig),
    **fine_tuning_loop_params(SFT_DEFAULTS),  # SFT's own defaults for the loop (llm/sft_config.py)
}


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    # "auto" and the learning rate's default depend on the model: resolved here, so the stored row says what runs.
    resolve_fine_tuning(params, SFT_DEFAULTS, session.get(Model, params["model_id"]).config)
    if params.get("min_lr") is not None and params["min_lr"] > params["lr"]:
        raise JobParamsError("min_lr", "must not be greater than lr")
    check_schedule(params, PARAMS)
    check_memory(estimate(session, params, settings), params, settings, declared=PARAMS)


SPEC = JobKindSpec(
    kind="sft", title="Fine-tune (SFT)",
    description="Fine-tune a model on conversations (LoRA adapter or all weights); the loss is on the "
                "assistant's answers only, including the end-of-turn token so the model learns to stop.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.chat,), model_kinds=(ModelKind.base, ModelKind.sft),
    produces=ModelKind.sft, check=check, estimate=estimate,
    metric_cards=METRIC_CARDS, plots=PLOTS, report_card=REPORT_CARD,
    form_fields=("model_id", "dataset_id", "method", "lora_r", "lora_alpha", "max_steps", "batch_size", "block_size",
                 "lr", "warmup", "eval_every", "checkpoint_every", "seed", "name"),
    form=TrainFormNames(prefix="ft", tab="Fine-tune", tab_id="finetune",
                        intro="**auto** trains all weights of a small model and a LoRA adapter on a large one "
                              "(the estimate says which, and why); **lora** trains a small adapter that loads onto "
                              "its base model; **full** writes a full model."),
)
