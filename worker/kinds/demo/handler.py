"""The `demo` kind's handler: `workbench demo` into the job's run directory, its progress lines in the job log, its
stages as the progress bar, its table at the end of the log and its claims in the summary. On success its models
(base, SFT, reward, DPO) become Model rows with their lineage, and its tokenizer joins the trained tokenizers, so
a new user can chat with them, put them in the arena or train on from them."""

from __future__ import annotations

import shutil
from typing import Any

from sqlalchemy.orm import Session

from db.models import Model, ModelKind
from worker.jobs.context import JobContext, Outcome


def run(ctx: JobContext) -> Outcome:
    from llm.checkpoint import read_config
    from llm.demo import MODELS, DemoConfig, DemoStopped, publish, run_demo
    from llm.demo_report import table
    from llm.tokenizer import tokenizers_dir

    out = ctx.run_dir / "demo"
    if out.exists():  # a resumed attempt: the demo is minutes long and has no checkpoint, so it starts again
        ctx.log("an earlier attempt's demo is removed: the demo starts again from its first stage")
        shutil.rmtree(out)
    try:
        report = run_demo(out, DemoConfig(seed=ctx.params["seed"]), say=ctx.log, should_stop=ctx.should_stop,
                          on_progress=lambda done, total: ctx.set_progress(done / total),
                          tokenizer_name=f"demo-job{ctx.job_id}")
    except DemoStopped as stopped:
        return Outcome(stopped=True, summary=str(stopped))
    for line in table(report).splitlines():
        ctx.log(line)
    tokenizer = publish(out, tokenizers_dir(ctx.data_dir))
    ctx.log(f"the demo's tokenizer is registered as {tokenizer!r}; its models are registered as "
            f"demo-job{ctx.job_id}-{{{','.join(name for name, _ in MODELS)}}}")
    held = [claim.replace("_", " ") for claim, true in report["checks"].items() if true]
    missed = [claim.replace("_", " ") for claim, true in report["checks"].items() if not true]
    summary = f"{len(held)} of {len(report['checks'])} stages did better than the one before"
    if missed:
        summary += f" (not: {', '.join(missed)})"

    def finalize(session: Session) -> dict[str, Any]:
        made: dict[str, Model] = {}
        for name, parent in MODELS:
            model_dir = out / name
            config = read_config(model_dir)
            made[name] = Model(name=f"demo-job{ctx.job_id}-{name}", kind=ModelKind(name), tokenizer=tokenizer,
                               config=config.get("model") or read_config(model_dir.parent / parent)["model"],
                               path=model_dir.relative_to(ctx.data_dir).as_posix(),
                               parent=made[parent] if parent else None, job_id=ctx.job_id, owner_id=ctx.owner_id)
            session.add(made[name])
        session.flush()
        return {"output_model_id": made[MODELS[-1][0]].id}

    return Outcome(summary=f"{summary}; the report is {out.relative_to(ctx.data_dir) / 'report.md'} "
                           "(labels and arena votes by a rule, not a person)", finalize=finalize)
