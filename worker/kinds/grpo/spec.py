"""The `grpo` kind's declaration: Group Relative Policy Optimization of an SFT (or base) model on a prompts dataset.

Each prompt is answered G times by the policy; the answers are scored by a built-in verifier against the prompt's
reference answer (llm/verifiers.py) and/or by a reward model of the workbench (RLHF), minus an optional length
penalty, and the policy learns from the answers that beat their group (llm/grpo.py). The output is a chat model of
kind grpo whose parent is the policy it started from (an adapter of it with LoRA).

Refused at submit, each naming its field: a prompts file whose line lacks the `answer` the verifier needs (with the
file and line), a regular expression that does not compile or nests repeats (catastrophic backtracking), G < 2 (the
declared bound), a reward model that is not one or reads another tokenizer than the policy, nothing to score with,
an answer length that leaves no room for a prompt, and a run that does not fit the workers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import LANGUAGE_MODEL_KINDS, Dataset, DatasetKind, Model, ModelKind
from db.settings import Settings, safe_join
from llm.chat_data import DataFormatError
from llm.grpo_config import GRPO_DEFAULTS, GRPOConfig, resolved_beta
from llm.grpo_data import read_prompt_records
from llm.params import Setting, settings_of
from llm.verifiers import NEEDS_PATTERN, PatternProblem, check_pattern
from worker.jobs.fit import check_memory, check_schedule
from worker.jobs.params import JobParamsError, fine_tuning_loop_params, resolve_fine_tuning
from worker.jobs.spec import DATASET_ID, MODEL_ID, MODEL_NAME, JobKindSpec, TrainFormNames
from worker.kinds.grpo.card import METRIC_CARDS, PLOTS, REPORT_CARD, run_report
from worker.kinds.grpo.estimate import estimate
from worker.kinds.grpo.handler import run

REWARD_MODEL_ID = Setting("int", minimum=1, label="reward model",
                          help="id of a reward model whose score is added to the reward (RLHF); it must read the "
                               "policy's tokenizer")

PARAMS = {
    "model_id": MODEL_ID,
    "dataset_id": Setting(**{**DATASET_ID.__dict__, "label": "prompts dataset",
                             "help": "id of a prompts dataset (jsonl: prompt or messages, and answer for the exact, "
                                     "numeric and contains verifiers)"}),
    "reward_model_id": REWARD_MODEL_ID,
    "name": MODEL_NAME,
    **settings_of(GRPOConfig),
    **fine_tuning_loop_params(GRPO_DEFAULTS),  # GRPO's own defaults for the loop (llm/grpo_config.py)
}


def check_rewards(session: Session, params: dict[str, Any], settings: Settings, policy: Model) -> None:
    """What scores the answers can: the pattern is safe, the reward model is one and reads the policy's tokens, and
    every prompt carries the reference answer the verifier compares with."""
    verifier = params["verifier"]
    if verifier in NEEDS_PATTERN:
        try:
            check_pattern(params.get("pattern") or "")
        except PatternProblem as problem:
            raise JobParamsError("pattern", str(problem).removeprefix("pattern: ")) from None
    reward_model_id = params.get("reward_model_id")
    if verifier == "none" and reward_model_id is None:
        raise JobParamsError("verifier", "choose a verifier or a reward model: GRPO needs something to score answers")
    if reward_model_id is not None:
        reward_model = session.get(Model, reward_model_id)
        if reward_model is None or reward_model.kind != ModelKind.reward:
            raise JobParamsError("reward_model_id", f"model {reward_model_id} is not a reward model")
        if reward_model.tokenizer != policy.tokenizer:
            raise JobParamsError("reward_model_id", f"the reward model reads the tokenizer {reward_model.tokenizer!r}, "
                                                    f"the policy {policy.tokenizer!r}: it would score other tokens "
                                                    "than the policy writes")
    dataset = session.get(Dataset, params["dataset_id"])
    try:
        read_prompt_records(safe_join(settings.data_dir, dataset.path), verifier, display_name=dataset.name)
    except DataFormatError as error:
        raise JobParamsError("dataset_id", str(error)) from None
    except OSError:
        raise JobParamsError("dataset_id", f"the file of dataset {dataset.id} is missing from the data directory") \
            from None


def check(session: Session, params: dict[str, Any], settings: Settings) -> None:
    policy = session.get(Model, params["model_id"])
    resolve_fine_tuning(params, GRPO_DEFAULTS, policy.config)
    context = min(params["block_size"], (policy.config or {}).get("block_size") or params["block_size"])
    if params["max_completion_length"] >= context:
        raise JobParamsError("max_completion_length", f"{params['max_completion_length']} tokens leave no room for a "
                                                      f"prompt in {context} (block_size and the model's context)")
    check_rewards(session, params, settings, policy)
    # Empty beta: the default for what scores the answers, written into the stored params (the job log says it).
    params["beta"] = resolved_beta(params.get("beta"), params.get("reward_model_id") is not None)
    check_schedule(params, PARAMS)
    check_memory(estimate(session, params, settings), params, settings, declared=PARAMS)


SPEC = JobKindSpec(
    kind="grpo", title="GRPO",
    description="Reinforcement learning on the model's own answers: it answers each prompt G times, a verifier or a "
                "reward model scores the answers, and it learns from those that beat their group.",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.prompts,),
    model_kinds=LANGUAGE_MODEL_KINDS,
    produces=ModelKind.grpo, check=check, estimate=estimate,
    metric_cards=METRIC_CARDS, plots=PLOTS, report_card=REPORT_CARD, run_report=run_report,
    form_fields=("model_id", "dataset_id", "verifier", "pattern", "reward_model_id", "num_generations",
                 "max_completion_length", "loss_type", "beta", "method", "max_steps", "batch_size", "lr",
                 "eval_every", "seed", "name"),
    form=TrainFormNames(prefix="grpo", tab="GRPO", tab_id="grpo",
                        intro="Start from an SFT model and a prompts dataset; the result is a chat model."),
)
