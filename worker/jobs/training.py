"""The one path every training kind takes in the worker (pretrain, SFT, and later reward and DPO).

    params ──> TrainConfig ──> the kind's llm function ──> Outcome (+ the Model row on success)

What is the same for every kind lives here once:
  - the TrainConfig is built from the job's params (their names are TrainConfig's own fields);
  - resume bookkeeping: the run continues from `runs/<job id>/checkpoint/`, and metrics the lost
    attempt recorded after that checkpoint are deleted (those steps run again);
  - the summary line, and the Model row (kind, parent, tokenizer, config, path) written in the same
    transaction that marks the job succeeded;
  - a warning about the run (`add_warning`: the loop's not-learning watch, llm/learning_watch.py, for every kind;
    DPO's degeneration watch too): a WARNING line in the log, the end of the summary, and the job's notice,
    which the Jobs tab shows as a warning on a job that succeeded.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import delete
from sqlalchemy.orm import Session

from db.models import Metric, Model, ModelKind
from llm.learning_watch import read_warning
from worker.jobs.context import JobContext, Outcome

# Metrics named in the summary line of a finished run, when the run reports them.
SUMMARY_METRICS = ("loss", "val_loss", "val_bpb", "mean_token_accuracy", "val_mean_token_accuracy")


def train_config_from(ctx: JobContext):
    """The job's TrainConfig: its params that are TrainConfig fields; the device, unless the job pins one,
    is the worker's own setting (WORKBENCH_DEVICE)."""
    from llm.train_config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    values = {name: value for name, value in ctx.params.items() if name in names}
    values.setdefault("device", ctx.settings.device)
    return TrainConfig(**values)


def prepare_resume(ctx: JobContext) -> int:
    """Forget the metrics recorded after the checkpoint the run will resume from; return its step."""
    from llm.train import checkpoint_step

    step = checkpoint_step(ctx.run_dir)
    ctx.session.execute(delete(Metric).where(Metric.job_id == ctx.job_id, Metric.step > step))
    ctx.session.commit()
    if step:
        ctx.log(f"resuming from the checkpoint at step {step}")
    return step


def summary_of(result: dict[str, Any]) -> str:
    parts = [f"{name} {result[name]:.4f}" for name in SUMMARY_METRICS if isinstance(result.get(name), float)]
    return f"finished at step {result['step']}" + (": " + ", ".join(parts) if parts else "")


def run_training(ctx: JobContext, train: Callable[[Any], dict[str, Any]], *, produces: ModelKind,
                 parent_model_id: int | None = None, extra_summary: str = "") -> Outcome:
    """Run `train(train_config)` (a call into llm/ that returns its result dict with `stopped`, `step`,
    `model_dir`) and turn its result into the job's Outcome."""
    from llm.checkpoint import read_config

    prepare_resume(ctx)
    result = train(train_config_from(ctx))
    if result["stopped"]:
        return Outcome(stopped=True, summary=f"stopped at step {result['step']}")

    model_dir = Path(result["model_dir"])
    config = read_config(model_dir)
    summary = summary_of(result) + (f"; {extra_summary}" if extra_summary else "")
    name = ctx.params.get("name") or f"{ctx.kind}-{ctx.job_id}"

    def finalize(session: Session) -> dict[str, Any]:
        model = Model(name=name, kind=produces, tokenizer=config["tokenizer"], config=config["model"],
                      path=model_dir.relative_to(ctx.data_dir).as_posix(), parent_model_id=parent_model_id,
                      job_id=ctx.job_id, owner_id=ctx.owner_id)
        session.add(model)
        session.flush()
        return {"output_model_id": model.id}

    outcome = Outcome(summary=summary, finalize=finalize)
    add_warning(ctx, outcome, read_warning(ctx.run_dir))
    return outcome


def add_warning(ctx: JobContext, outcome: Outcome, warning: str | None) -> None:
    """Say `warning` (None: nothing to say) about a run that succeeded: a WARNING line in the job's log, at the end
    of its summary, and in its notice (the job row's `error`, shown as a warning when the job succeeded); a second
    warning joins the first."""
    if not warning:
        return
    ctx.log(f"WARNING: {warning}")
    outcome.summary += f"; WARNING: {warning}"
    record = outcome.finalize

    def finalize(session: Session) -> dict[str, Any]:
        values = record(session) if record is not None else {}
        return {**values, "error": f"{values['error']} {warning}" if values.get("error") else warning}

    outcome.finalize = finalize
