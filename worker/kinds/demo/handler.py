"""The `demo` kind's handler: `workbench demo` into the job's run directory, its progress lines in the job log, its
stages as the progress bar, its table at the end of the log and its claims in the summary."""

from __future__ import annotations

import shutil

from worker.jobs.context import JobContext, Outcome


def run(ctx: JobContext) -> Outcome:
    from llm.demo import DemoConfig, DemoStopped, run_demo
    from llm.demo_report import table

    out = ctx.run_dir / "demo"
    if out.exists():  # a resumed attempt: the demo is minutes long and has no checkpoint, so it starts again
        ctx.log("an earlier attempt's demo is removed: the demo starts again from its first stage")
        shutil.rmtree(out)
    try:
        report = run_demo(out, DemoConfig(seed=ctx.params["seed"]), say=ctx.log, should_stop=ctx.should_stop,
                          on_progress=lambda done, total: ctx.set_progress(done / total))
    except DemoStopped as stopped:
        return Outcome(stopped=True, summary=str(stopped))
    for line in table(report).splitlines():
        ctx.log(line)
    held = [claim.replace("_", " ") for claim, true in report["checks"].items() if true]
    missed = [claim.replace("_", " ") for claim, true in report["checks"].items() if not true]
    summary = f"{len(held)} of {len(report['checks'])} stages did better than the one before"
    if missed:
        summary += f" (not: {', '.join(missed)})"
    return Outcome(summary=f"{summary}; the report is {out.relative_to(ctx.data_dir) / 'report.md'} "
                           "(labels and arena votes by a rule, not a person)")
