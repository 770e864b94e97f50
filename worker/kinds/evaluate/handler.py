"""The `evaluate` kind's handler: each model in turn on the job's dataset (`llm.multiple_choice` for a benchmark,
`llm.evaluate` on the validation split of a text dataset prepared with that model's tokenizer).

Each model's numbers are Metric rows at its own step (step i: the i-th model, whose id is the metric
`model_id`), and every result (a benchmark's per-question scores too) goes to `results.json` in the run
directory as soon as it is known, so a resumed job scores only the models an earlier attempt had not finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from db.models import DatasetKind, Model
from llm.evaluate_config import EvaluateConfig
from llm.params import settings_of
from worker.jobs.context import JobContext, Outcome, dataset_path, ensure_prepared, stored_path

RESULTS_FILE = "results.json"
CONFIG_FIELDS = tuple(settings_of(EvaluateConfig))
HEADLINE = {DatasetKind.benchmark: "acc", DatasetKind.text: "val_bpb"}  # the number a summary names per model


def results_path(run_dir: Path) -> Path:
    return run_dir / RESULTS_FILE


def _earlier_results(ctx: JobContext) -> dict[int, dict[str, Any]]:
    path = results_path(ctx.run_dir)
    if not path.is_file():
        return {}
    return {result["model_id"]: result for result in json.loads(path.read_text())["results"]}


def _write_results(ctx: JobContext, results: dict[int, dict[str, Any]]) -> None:
    from llm.atomic_files import atomic_write_text

    document = {"dataset_id": ctx.dataset.id, "dataset": ctx.dataset.name, "dataset_kind": ctx.dataset.kind.value,
                "results": list(results.values())}
    atomic_write_text(results_path(ctx.run_dir), json.dumps(document, indent=1))


def _evaluate_one(ctx: JobContext, model: Model, config: EvaluateConfig, questions: list | None, device) -> dict | None:
    """One model's result, or None when the job was cancelled while its data was being prepared."""
    from llm.checkpoint import read_config
    from llm.evaluate import evaluate
    from llm.multiple_choice import evaluate_benchmark

    model_dir = stored_path(ctx, model, "model")
    if questions is not None:
        return evaluate_benchmark(model_dir, questions, config, device=device, data_dir=ctx.data_dir)
    prepared = ensure_prepared(ctx, read_config(model_dir)["tokenizer"])
    if prepared is None:
        return None
    return evaluate(model_dir, prepared, batch_size=config.batch_size, max_batches=config.max_batches,
                    device=device, data_dir=ctx.data_dir)


def run(ctx: JobContext) -> Outcome:
    from llm.chat_data import read_dataset
    from llm.device import pick_device

    params, session = ctx.params, ctx.session
    config = EvaluateConfig(**{name: params[name] for name in CONFIG_FIELDS if name in params})
    models = [session.get(Model, model_id) for model_id in params["model_ids"]]
    session.commit()  # no read transaction held while evaluating
    if any(model is None for model in models):
        missing = [model_id for model_id, model in zip(params["model_ids"], models) if model is None]
        raise ValueError(f"model {', '.join(map(str, missing))} no longer exists")
    benchmark = ctx.dataset.kind == DatasetKind.benchmark
    questions = read_dataset("benchmark", dataset_path(ctx), ctx.dataset.original_filename) if benchmark else None
    results = _earlier_results(ctx)
    if results:
        ctx.log(f"{len(results)} of {len(models)} models already evaluated by an earlier attempt")
    device = pick_device(ctx.settings.device)
    for step, model in enumerate(models, start=1):
        if model.id in results:
            continue
        if ctx.should_stop():
            return Outcome(stopped=True, summary=f"stopped after {len(results)} of {len(models)} models")
        ctx.log(f"evaluating model {model.id} ({model.name!r}) on dataset {ctx.dataset.id} "
                f"({f'{len(questions):,} questions' if benchmark else 'validation split'})")
        result = _evaluate_one(ctx, model, config, questions, device)
        if result is None:
            return Outcome(stopped=True, summary=f"stopped after {len(results)} of {len(models)} models")
        results[model.id] = {"model_id": model.id, "model": model.name, **result}
        _write_results(ctx, results)
        ctx.on_metrics({"step": step, "model_id": model.id, **result, "progress": step / len(models)})
    headline = HEADLINE[ctx.dataset.kind]
    shown = ", ".join(f"{results[model.id]['model']} {results[model.id][headline]:.4f}" for model in models
                      if results[model.id].get(headline) is not None)
    return Outcome(summary=f"{len(models)} model{'s' if len(models) != 1 else ''} on dataset {ctx.dataset.id}"
                           + (f"; {headline}: {shown}" if shown else ""))
