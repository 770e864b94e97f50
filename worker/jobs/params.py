"""Checking a job's parameters against its kind's declared settings.

The settings themselves (type, default, bounds, help) are declared once, on the `llm` config
dataclasses (`llm.params.setting`) or in a kind's module (`worker/kinds/`); this module only
applies them to what a person sent and names the wrong field when something is off.
"""

from __future__ import annotations

from typing import Any

from llm.params import Setting, settings_of
from llm.train_config import FineTuningDefaults, MethodChoice, check_parallelism, choose_method
from worker.jobs.devices import MAX_SLOTS


class JobParamsError(ValueError):
    """A job parameter is wrong; `field` names it (for the UI) and `message` says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Parameters a submit may still send under an older name: (the name now, what to send instead). Rows stored with
# them still run (`stored_fine_tuning_params`); a new job is asked for the new name.
RENAMED_PARAMS = {"full": ("method", 'replaced by "method": "full" (every weight), "lora" (an adapter) or "auto" '
                                     "(the default: all weights on a small model, LoRA on a large one)")}


def check_params(kind_name: str, declared: dict[str, Setting], params: Any, *,
                 require: bool = True) -> dict[str, Any]:
    """`params` checked against `declared`, with every declared default filled in.

    The stored row then says exactly what the job runs with, whatever later versions change in
    their defaults. A default of None means "decided when the job runs" (e.g. the device: the
    worker's own setting) and is left out. Raises JobParamsError on the first problem: unknown
    names first, then missing required ones (unless `require` is False: a form being filled in),
    then each value in turn.
    """
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise JobParamsError("params", "must be an object of parameter names to values")
    for name in params:
        if name not in declared:
            renamed = RENAMED_PARAMS.get(name)
            if renamed is not None and renamed[0] in declared:
                raise JobParamsError(name, renamed[1])
            raise JobParamsError(name, f"unknown parameter for a {kind_name} job; "
                                       f"known: {', '.join(sorted(declared))}")
    for name, spec in declared.items():
        if require and spec.required and params.get(name) is None:
            raise JobParamsError(name, "is required")
    normalized = {name: spec.default for name, spec in declared.items() if spec.default is not None}
    for name, value in params.items():
        if value is None:  # an empty form field: keep the default
            continue
        try:
            normalized[name] = declared[name].check(name, value)
        except ValueError as error:
            raise JobParamsError(name, str(error)) from None
    return normalized


def required(params: dict[str, Any], name: str) -> Any:
    """`params[name]`, or JobParamsError("is required") where a form's preview does not have it yet (a job's
    params always have their required ones: `check_params` says so first)."""
    if params.get(name) is None:
        raise JobParamsError(name, "is required")
    return params[name]


def with_defaults(declared: dict[str, Setting], defaults: dict[str, Any]) -> dict[str, Setting]:
    """The same declarations with other defaults (e.g. SFT's learning rate), for one job kind."""
    return {name: spec.with_default(defaults[name]) if name in defaults else spec
            for name, spec in declared.items()}


# ----------------------------------------------------------------------------- where a training job runs

# Every training kind's placement (pretrain, SFT, reward, DPO; the RL kinds too): spread into its PARAMS. Not llm
# settings: the queue reads them (`worker.jobs.devices`), the worker's launcher starts that many processes.
PLACEMENT_PARAMS = {
    "devices": Setting("int", default=1, minimum=1, maximum=MAX_SLOTS, advanced=True, label="devices",
                       help="GPUs (or CPU processes) the job runs on, one training process each, on one worker: "
                            "a worker runs it when that many of its devices are free; more than 1 trains "
                            "data-parallel (each device holds the whole model; 1/N of it with parallelism fsdp)"),
    "nodes": Setting("int", default=1, minimum=1, maximum=MAX_SLOTS, advanced=True, label="nodes",
                     help="workers (machines) the job spans, each giving it `devices` devices"),
}


# ----------------------------------------------------------------------------- kinds that fine-tune (SFT, reward, DPO)

def fine_tuning_loop_params(defaults: FineTuningDefaults) -> dict[str, Setting]:
    """The loop's settings for a kind that starts from trained weights (`FineTuningDefaults.settings`, as its CLI
    flags), with the device left to the worker. The learning rate is left empty; the kind's check fills it in
    (`resolve_fine_tuning`: it depends on the method and the model's width), so the stored row says what runs. With
    the placement (`PLACEMENT_PARAMS`): every kind that fine-tunes has it."""
    return {**with_defaults(defaults.settings(), {"device": None}), **PLACEMENT_PARAMS}


def resolve_fine_tuning(params: dict[str, Any], defaults: FineTuningDefaults,
                        model_config: dict | None) -> MethodChoice:
    """At submit (the kinds' `check`): the method "auto" replaced by what it stands for on the model it starts from
    (`model_config`: the Model row's `config`), its reason in plain words ("method_reason"), and the learning rate
    the method's rule gives at the model's width unless one was given; written into `params`, so the stored row
    (and the job log) says what runs and why."""
    choice = choose_method(params["method"], model_config)
    try:  # LoRA with FSDP is refused here, at submit, with the method "auto" stands for
        check_parallelism(choice.method, params.get("parallelism"), defaults.no_fsdp)
    except ValueError as error:
        raise JobParamsError("parallelism", str(error)) from None
    params["method"], params["method_reason"] = choice.method, choice.reason
    params["lr"] = defaults.learning_rate(choice.method, params.get("lr"), (model_config or {}).get("n_embd"))
    return choice


def stored_fine_tuning_params(params: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning job's stored params as this version reads them: the one place that maps rows stored before
    `method` existed, which hold "full": true/false (their lr was filled in at submit, as now)."""
    if "full" not in params:
        return params
    mapped = {name: value for name, value in params.items() if name != "full"}
    mapped.setdefault("method", "full" if params["full"] else "lora")
    mapped.setdefault("method_reason", f"{'all weights' if mapped['method'] == 'full' else 'LoRA adapter'}, as "
                                       "stored (the job predates the method setting)")
    return mapped


def fine_tuning_config(config_class: type, params: dict[str, Any]):
    """The kind's config (SFTConfig, RewardConfig, DPOConfig) from a job's stored params
    (`stored_fine_tuning_params`)."""
    params = stored_fine_tuning_params(params)
    return config_class(**{name: params[name] for name in settings_of(config_class) if name in params})


def method_said(params: dict[str, Any]) -> str:
    """The method a fine-tuning job runs and why, for its log: its stored reason (`resolve_fine_tuning`)."""
    params = stored_fine_tuning_params(params)
    return params.get("method_reason") or f"method {params.get('method', 'auto')}"
