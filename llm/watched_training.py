"""The one training loop with the degeneration watch wired in: what DPO and KTO run (llm/degeneration.py says what
is watched and why).

    result = train_watched(model, objective_of, batches, config, out_dir, policy=..., guard=..., watch=...,
                           watch_metrics=..., evaluation_figures=..., ...)

At each evaluation the objective calls the watch callback it was built with (`objective_of(watch_signals)`): the
start's answers are sampled once, then the policy's, and their signals become metrics (`watch_metrics`: the
watch's name -> the metric's). When the loop records that evaluation, the guard checks those signals with the
objective's own figures (`evaluation_figures`: metric -> the guard's name) before anyone reads the record, and asks
the loop to stop when they are out of bounds.

A run an earlier attempt stopped on a flag is not trained again: its kept weights are the result. A run a flag
stops ends with the weights of the last evaluation that passed, written by `policy.save` (llm/tuned_policy.py).
Returns `llm.train.train`'s result, or {"stopped": False, "step": the flag's step, "loss": None} for a run stopped
on a flag by an earlier attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from llm.degeneration import DegenerationGuard, SampleWatch
from llm.train import TrainConfig, train
from llm.tuned_policy import TunedPolicy


def train_watched(model: nn.Module, objective_of: Callable[[Callable[[nn.Module], dict]], Any], batches: Any,
                  config: TrainConfig, out_dir: Path, *, policy: TunedPolicy, guard: DegenerationGuard,
                  watch: SampleWatch, watch_metrics: dict[str, str], evaluation_figures: dict[str, str],
                  trainable_params: list, flops_per_token: float, resume: bool,
                  on_metrics: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None,
                  log: Callable[[str], None]) -> dict:
    measured: dict = {}

    def watch_signals(trained: nn.Module) -> dict:
        """At each evaluation (eval mode, no gradients): the start's answers once, then the policy's."""
        guard.observe_start(policy.reference)
        measured.clear()
        measured.update(watch.measure(policy.policy_of(trained), policy.reference))
        return {metric: measured[name] for name, metric in watch_metrics.items() if measured.get(name) is not None}

    def on_record(record: dict) -> None:
        if measured:  # an evaluation step: check it before anyone reads its metrics
            signals = {**measured, **{name: record.get(key) for key, name in evaluation_figures.items()}}
            measured.clear()
            record["degeneration_problems"] = len(guard.observe(record["step"], signals, model))
        if on_metrics is not None:
            on_metrics(record)

    objective = objective_of(watch_signals)
    if guard.stopped:  # an earlier attempt stopped on a flag: its kept weights are the result
        log(f"this run stopped on a degeneration flag at step {guard.report['flag']['step']}; keeping its result")
        result = {"stopped": False, "step": guard.report["flag"]["step"], "loss": None}
    else:
        result = train(model, objective, batches, config, out_dir, on_metrics=on_record,
                       should_stop=lambda: guard.should_stop() or (should_stop is not None and should_stop()),
                       trainable_params=trainable_params, flops_per_token=flops_per_token,
                       save_model_fn=policy.save, resume=resume, log=log)
    if guard.stopped:
        kept = guard.restore(model)
        policy.save(model, out_dir)
        log(f"kept the weights of step {kept}, the last evaluation that passed, as the result")
    return result
