"""The `grpo` job kind in the worker: bad input refused at submit, each naming its field and why (a prompts line
without the answer the verifier needs, a pattern that does not compile or could run away, G < 2, a reward model of
another tokenizer, nothing to score with), and an empty beta resolved by what scores the answers; a run through the
real runner records a grpo Model with its parent, TRL's metric names and the answers table; a killed attempt resumes
from its checkpoint. Learning: test_defaults_learn.py."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.models import DatasetKind, Job, JobLog, JobStatus, Metric, Model, ModelKind
from tests.conftest import StopOnQuestion
from tests.support.records import add_base_model, add_dataset
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError
from worker.kinds.grpo import handler as grpo_kind
from worker.runtime.runner import _make_context, execute_job

pytestmark = pytest.mark.slow

ANSWERED = [json.dumps({"prompt": f"What is {i} plus {i}?", "answer": str(2 * i)}) for i in range(12)]


def run_params(model_id, dataset_id, **overrides):
    return {"model_id": model_id, "dataset_id": dataset_id, "verifier": "numeric", "num_generations": 2,
            "max_completion_length": 8, "max_steps": 4, "batch_size": 2, "block_size": 64, "eval_every": 2,
            "checkpoint_every": 2, "eval_prompts": 2, "device": "cpu", **overrides}


def test_bad_input_is_refused_at_submit_with_the_field_and_the_reason(workbench_env, session):
    base = add_base_model(session, workbench_env)
    prompts = add_dataset(session, workbench_env, DatasetKind.prompts, ANSWERED, "sums")
    missing = add_dataset(session, workbench_env, DatasetKind.prompts,
                          ANSWERED[:3] + [json.dumps({"prompt": "And 9 plus 9?"})], "one without")
    reward = Model(name="rm", kind=ModelKind.reward, tokenizer="cl100k", config=base.config, path="models/rm")
    session.add(reward)
    session.commit()
    cases = [
        (run_params(base.id, missing.id), "dataset_id", "line 4, field answer: missing: the numeric verifier"),
        (run_params(base.id, prompts.id, verifier="regex", pattern="(unclosed"), "pattern", "does not compile"),
        (run_params(base.id, prompts.id, verifier="format", pattern=r"(\w+\s?)+!"), "pattern", "backtrack"),
        (run_params(base.id, prompts.id, num_generations=1), "num_generations", "at least 2"),
        (run_params(base.id, prompts.id, verifier="none"), "verifier", "choose a verifier or a reward model"),
        (run_params(base.id, prompts.id, reward_model_id=reward.id), "reward_model_id", "tokenizer 'cl100k'"),
        (run_params(base.id, prompts.id, reward_model_id=base.id), "reward_model_id", "is not a reward model"),
        (run_params(base.id, prompts.id, max_completion_length=64), "max_completion_length", "no room"),
    ]
    for params, field, words in cases:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, "grpo", params)
        assert caught.value.field == field and words in caught.value.message, str(caught.value)
    assert session.scalar(select(func.count()).select_from(Job)) == 0
    # A prompts file without answers is fine for a verifier that needs none.
    job = jobs.create_job(session, "grpo", run_params(base.id, missing.id, verifier="regex", pattern=r"\d"))
    assert job.params["method"] == "full" and job.params["lr"] > 0
    # An empty beta is the default for what scores the answers, stored with the job: 0 for a verifier alone, 0.5 when
    # a reward model scores them (llm/grpo_config.py's resolved_beta); a beta given stays.
    assert job.params["beta"] == 0.0
    same_tokens = Model(name="rm2", kind=ModelKind.reward, tokenizer=base.tokenizer, config=base.config,
                        path="models/rm2")
    session.add(same_tokens)
    session.commit()
    rlhf = jobs.create_job(session, "grpo", run_params(base.id, prompts.id, verifier="none",
                                                       reward_model_id=same_tokens.id))
    given = jobs.create_job(session, "grpo", run_params(base.id, prompts.id, reward_model_id=same_tokens.id, beta=0.1))
    assert (rlhf.params["beta"], given.params["beta"]) == (0.5, 0.1)


def test_a_grpo_job_runs_through_the_runner_and_resumes_after_a_kill(workbench_env, session):
    base = add_base_model(session, workbench_env)
    prompts = add_dataset(session, workbench_env, DatasetKind.prompts, ANSWERED, "sums")
    job = jobs.create_job(session, "grpo", run_params(base.id, prompts.id, verifier="regex", pattern="[a-z]",
                                                      name="tiny-grpo"))
    # The first attempt stops at its step-2 checkpoint, as a killed worker's job is requeued from there.
    ctx = _make_context(session, job.id, 1, workbench_env, StopOnQuestion(2))
    assert grpo_kind.run(ctx).stopped
    run_dir = workbench_env.data_dir / job.run_dir
    assert json.loads((run_dir / "checkpoint" / "checkpoint.json").read_text())["step"] == 2
    session.execute(Job.__table__.update().where(Job.id == job.id).values(status=JobStatus.queued))
    session.commit()
    claimed = jobs.claim_next_job(session, "test-host")
    assert execute_job(job.id, claimed.attempts, workbench_env) == JobStatus.succeeded
    session.expire_all()
    job = session.get(Job, job.id)
    model = session.get(Model, job.output_model_id)
    assert model.kind == ModelKind.grpo and model.parent_model_id == base.id and model.name == "tiny-grpo"
    names = set(session.scalars(select(Metric.name).where(Metric.job_id == job.id)))
    assert {"loss", "reward", "reward_std", "frac_reward_zero_std", "rewards/regex/mean", "completions/mean_length",
            "completions/clipped_ratio", "val_reward", "val_pass_rate", "val_kl"} <= names
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == job.id).order_by(JobLog.id)))
    assert any("resumed from" in line and "at step 2" in line for line in lines)
    assert any(line.startswith("answers at step 4") for line in lines)
    assert lines[-1].startswith("succeeded:") and "pass rate" in lines[-1] and "KL" in lines[-1]
    report = json.loads((run_dir / "grpo_report.json").read_text())
    assert [e["step"] for e in report["evaluations"]] == [2, 4]  # the first attempt's evaluation kept once
    assert {"prompt", "answer", "reward", "regex"} <= set(report["evaluations"][-1]["samples"][0])
    from worker.kinds import KINDS

    rows = KINDS["grpo"].run_report(run_dir)
    assert rows[0][0].startswith("GRPO reward on") and any(label.startswith("sample (reward") for label, _ in rows)
