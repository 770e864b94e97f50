"""The `dpo` kind's declaration: Direct Preference Optimization of an SFT (or base) model on preference pairs.

The pairs come from the same sources as the reward kind's (worker/kinds/reward/spec.py: PAIR_SOURCES). The
output is a chat model of kind dpo whose parent is the policy it started from (an adapter of it with LoRA).
"""

from __future__ import annotations

from db.models import LANGUAGE_MODEL_KINDS, DatasetKind, ModelKind
from llm.dpo_config import DPO_DEFAULTS, DPOConfig
from worker.jobs.spec import JobKindSpec, TrainFormNames
from worker.kinds.dpo.card import METRIC_CARDS, PLOTS, REPORT_CARD, run_report
from worker.kinds.dpo.estimate import estimate
from worker.kinds.dpo.handler import run
from worker.kinds.reward.spec import preference_check, preference_params

PARAMS = preference_params(DPOConfig, DPO_DEFAULTS)

SPEC = JobKindSpec(
    kind="dpo", title="DPO",
    description="Direct Preference Optimization: make the chosen answers more likely than the rejected ones, "
                "relative to where the model started. Both rewards often fall; what matters is their margin.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.preference,),
    model_kinds=LANGUAGE_MODEL_KINDS, produces=ModelKind.dpo,
    check=preference_check(PARAMS, DPO_DEFAULTS, estimate), estimate=estimate,
    metric_cards=METRIC_CARDS, plots=PLOTS, report_card=REPORT_CARD, run_report=run_report,
    form_fields=("model_id", "dataset_id", "project_ids", "include_arena", "beta", "loss_type", "method", "lora_r",
                 "max_steps", "batch_size", "block_size", "lr", "eval_every", "seed", "name"),
    form=TrainFormNames(prefix="dpo", tab="DPO", tab_id="dpo", intro="Start from an SFT model; the result is a chat model."),
)
