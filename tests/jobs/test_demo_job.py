"""The `demo` kind through the real job layer and runner: validated against its declaration, stopped between
stages, started again from scratch by a resumed attempt and run to success, with its stages as the progress, its
table in the log and its claims in the summary (the real demo, about two minutes of CPU time; what each stage's
model learned is checked by tests/llm/test_demo.py), and its models registered with their lineage."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Job, JobStatus, Model
from llm.checkpoint import load_model
from tests.conftest import StopOnQuestion
from tests.support.jobs import claim, log_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError
from worker.kinds.demo import handler as demo_handler
from worker.runtime.runner import _make_context, execute_job

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def test_the_demo_is_checked_against_its_declaration(workbench_env, session):
    for wrong in ({"seed": -1}, {"seed": "one"}):
        with pytest.raises(JobParamsError) as refused:
            jobs.create_job(session, "demo", wrong)
        assert refused.value.field == "seed"
    assert jobs.create_job(session, "demo", {}).params == {"seed": 0}


@pytest.mark.slow
def test_a_demo_job_stops_between_stages_and_a_resumed_attempt_runs_it_all(workbench_env, session):
    job = jobs.create_job(session, "demo", {})
    first = claim(session, job.id)
    # Asked before each stage: the third question stops it before its third stage.
    outcome = demo_handler.run(_make_context(session, job.id, first, workbench_env, StopOnQuestion(3)))
    assert outcome.stopped and "stopped before stage 3 of 8 (sft)" in outcome.summary
    assert jobs.finish_job(session, job.id, first, JobStatus.queued, log_line="requeued", event="requeued")

    assert execute_job(job.id, claim(session, job.id), workbench_env) == JobStatus.succeeded
    session.expire_all()
    finished = session.get(Job, job.id)
    lines = log_lines(session, job.id)
    assert finished.progress == 1.0
    # Its models are registered with their lineage (DPO, the last, is the job's output) and load by the tokenizer's
    # registered name, as the chat and the arena load them.
    models = {model.kind.value: model for model in session.scalars(select(Model).where(Model.job_id == job.id))}
    assert set(models) == {"base", "sft", "reward", "dpo"} and finished.output_model_id == models["dpo"].id
    assert models["base"].parent_model_id is None and models["sft"].parent_model_id == models["base"].id
    assert models["reward"].parent_model_id == models["sft"].id == models["dpo"].parent_model_id
    assert {model.tokenizer for model in models.values()} == {f"demo-job{job.id}"}
    _, tokenizer = load_model(workbench_env.data_dir / models["dpo"].path, data_dir=workbench_env.data_dir)
    assert tokenizer.name == f"demo-job{job.id}"
    assert "the demo starts again from its first stage" in "\n".join(lines)
    assert any("labeler in this demo is a rule, not a person" in line for line in lines)
    assert any(line.startswith("[8/8] arena:") for line in lines) and any(line.startswith("total ") for line in lines)
    succeeded = [line for line in lines if line.startswith("succeeded: ")]
    assert succeeded and "5 of 5 stages did better than the one before" in succeeded[-1]
    assert "by a rule, not a person" in succeeded[-1]
    assert (workbench_env.data_dir / finished.run_dir / "demo" / "report.md").is_file()
