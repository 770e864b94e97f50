"""The `reward` and `dpo` job kinds in the worker: their pair sources (an uploaded preference dataset,
labeling projects' consensus, arena votes) are checked at submit and snapshotted once per run; a run through
the real runner records a reward / dpo Model with its parent. Learning is tested in test_reward.py and
test_dpo.py; here the platform around it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.models import Comparison, DatasetKind, Job, JobLog, JobStatus, Metric, Model, ModelKind
from llm.dpo_config import DPO_DEFAULTS
from llm.reward_config import REWARD_DEFAULTS
from tests.conftest import StopOnQuestion
from tests.support.records import add_base_model, add_dataset, labeled_project, preference_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError
from worker.jobs.preference_pairs import PAIRS_FILE, SOURCES_FILE
from worker.kinds.reward import handler as reward_kind
from worker.runtime.runner import _make_context, execute_job

pytestmark = pytest.mark.slow


def run_params(model_id, **overrides):
    return {"model_id": model_id, "max_steps": 4, "batch_size": 4, "block_size": 64, "eval_every": 2,
            "checkpoint_every": 2, "log_every": 1, "device": "cpu", **overrides}


@pytest.mark.parametrize("kind", ["reward", "dpo"])
def test_pair_sources_are_checked_at_submit(workbench_env, session, kind):
    base = add_base_model(session, workbench_env)
    chat = add_dataset(session, workbench_env, DatasetKind.chat, ['{"messages": []}'], "chat")
    cases = [
        (run_params(base.id), "dataset_id", "choose where the pairs come from"),
        (run_params(base.id, dataset_id=chat.id), "dataset_id", "needs a preference dataset"),
        (run_params(base.id, project_ids="3,x"), "project_ids", "not a project id"),
        (run_params(base.id, project_ids="77"), "project_ids", "no labeling project with id 77"),
    ]
    for params, field, words in cases:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, kind, params)
        assert caught.value.field == field and words in caught.value.message, str(caught.value)
    assert session.scalar(select(func.count()).select_from(Job)) == 0
    project = labeled_project(session)
    job = jobs.create_job(session, kind, run_params(base.id, project_ids=f" {project.id} "))
    assert job.params["project_ids"] == str(project.id)
    # The row says what runs: "auto" on the tiny base is all weights, at the full rule's rate for its width (64).
    from worker.kinds import KINDS

    defaults = {"reward": REWARD_DEFAULTS, "dpo": DPO_DEFAULTS}[kind]
    assert job.params["method"] == "full" and job.params["method_reason"].startswith("all weights: 3.3 M parameters")
    assert job.params["lr"] == defaults.full_lr.at(64) and "full" not in job.params
    lora = jobs.create_job(session, kind, run_params(base.id, project_ids=str(project.id), method="lora"))
    assert (lora.params["method"], lora.params["lr"]) == ("lora", defaults.lora_lr.at(64))
    assert KINDS[kind].params["method"].default == "auto"


def test_a_reward_job_snapshots_its_pairs_once_and_records_a_reward_model(workbench_env, session):
    base = add_base_model(session, workbench_env)
    upload = add_dataset(session, workbench_env, DatasetKind.preference, preference_lines(), "prefs")
    project = labeled_project(session)
    job = jobs.create_job(session, "reward", run_params(base.id, dataset_id=upload.id, project_ids=str(project.id),
                                                        name="rm"))
    ctx = _make_context(session, job.id, 1, workbench_env, StopOnQuestion(2))
    assert reward_kind.run(ctx).stopped
    run_dir = workbench_env.data_dir / job.run_dir
    snapshot = (run_dir / PAIRS_FILE).read_text()
    sources = json.loads((run_dir / SOURCES_FILE).read_text())
    assert sources["counts"] == {"upload": 24, "label": 2} and len(sources["comparison_ids"]) == 2
    labeled = [json.loads(line) for line in snapshot.splitlines() if '"label"' in line]
    assert labeled[0]["labeler"] == "lea" and labeled[0]["chosen"][0]["content"].startswith("answer 0.0")

    # A label given after the run started does not change what it trains on.
    session.execute(Comparison.__table__.delete())
    session.commit()
    ctx = _make_context(session, job.id, 2, workbench_env, StopOnQuestion(10 ** 6))
    outcome = reward_kind.run(ctx)
    assert not outcome.stopped and "accuracy" in outcome.summary
    assert (run_dir / PAIRS_FILE).read_text() == snapshot


def test_a_dpo_job_runs_through_the_runner(workbench_env, session):
    base = add_base_model(session, workbench_env)
    upload = add_dataset(session, workbench_env, DatasetKind.preference, preference_lines(), "prefs")
    job = jobs.create_job(session, "dpo", run_params(base.id, dataset_id=upload.id, name="tiny-dpo"))
    claimed = jobs.claim_next_job(session, "test-host")
    assert execute_job(job.id, claimed.attempts, workbench_env) == JobStatus.succeeded
    session.expire_all()
    job = session.get(Job, job.id)
    model = session.get(Model, job.output_model_id)
    assert model.kind == ModelKind.dpo and model.parent_model_id == base.id and model.name == "tiny-dpo"
    names = set(session.scalars(select(Metric.name).where(Metric.job_id == job.id)))
    assert {"loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "val_rewards/accuracies",
            # the degeneration watch (llm/degeneration.py), at every evaluation: what the Jobs tab's cards show
            "val_logps/chosen_per_token", "val_logps/rejected_per_token", "val_kl", "degeneration_problems"} <= names
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == job.id).order_by(JobLog.id)))
    # The job log says what "auto" picked, why, and the learning rate, as the stored params do.
    assert any(f"{job.params['method_reason']}; learning rate {job.params['lr']:g})" in line for line in lines)
    assert any(line.startswith("sample at step 2: 'What should I do with") for line in lines)
    assert lines[-1].startswith("succeeded:") and "held-out preference accuracy" in lines[-1] and "KL" in lines[-1]
    assert job.error is None  # nothing flagged: no notice
