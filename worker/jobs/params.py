"""Checking a job's parameters against its kind's declared settings.

The settings themselves (type, default, bounds, help) are declared once, on the `llm` config
dataclasses (`llm.params.setting`) or in a kind's module (`worker/kinds/`); this module only
applies them to what a person sent and names the wrong field when something is off.
"""

from __future__ import annotations

from typing import Any

from llm.params import Setting
from llm.train_config import FineTuningDefaults


class JobParamsError(ValueError):
    """A job parameter is wrong; `field` names it (for the UI) and `message` says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


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


def fine_tuning_loop_params(defaults: FineTuningDefaults) -> dict[str, Setting]:
    """The loop's settings for a kind that starts from trained weights (`FineTuningDefaults.settings`, as its CLI
    flags), with the device left to the worker. The learning rate is left empty; the kind's check fills it in with
    `defaults.learning_rate` (it depends on `full`), so the stored row says what runs."""
    return with_defaults(defaults.settings(), {"device": None})
