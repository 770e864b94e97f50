"""The not-learning watch and the range test through the job layer: an SFT job at a rate far too small succeeds
with the warning in its log, its summary and its notice (the Jobs tab's warning); an
`lr_find` job on a chat dataset records the curve, the smoothed curve, the suggestion and its marker, and names
the suggestion in its summary; its params are checked (a chat dataset needs a model, a text dataset takes none)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import DatasetKind, Job, JobLog, JobStatus, Metric
from tests.support.records import add_base_model, add_dataset, chat_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError
from worker.runtime.runner import execute_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def run_job(session, settings, kind: str, params: dict) -> Job:
    job = jobs.create_job(session, kind, params)
    claimed = jobs.claim_next_job(session, "test-host")
    assert claimed.id == job.id
    assert execute_job(job.id, claimed.attempts, settings) == JobStatus.succeeded
    session.expire_all()
    return session.get(Job, job.id)


@SQLITE_ONLY
def test_an_sft_job_at_a_rate_far_too_small_succeeds_with_the_warning_in_its_log_summary_and_notice(
        workbench_env, session):
    base = add_base_model(session, workbench_env)
    chat = add_dataset(session, workbench_env, DatasetKind.chat, chat_lines(), "chat")
    job = run_job(session, workbench_env, "sft", {
        "model_id": base.id, "dataset_id": chat.id, "lr": 1e-7, "max_steps": 20, "batch_size": 4, "block_size": 64,
        "warmup": 1, "eval_every": 0, "checkpoint_every": 0, "log_every": 1, "device": "cpu"})
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == job.id)))
    warnings = [line for line in lines if line.startswith("WARNING: not learning")]
    assert len(warnings) == 2, lines  # said by the loop when it judged (step 5 of 20), and at the end with the summary
    assert "after 5 of 20 steps" in warnings[0] and "1e-07 may be too small" in warnings[0]
    assert "try 10x (1e-06)" in warnings[0] and "workbench lr-find" in warnings[0]
    assert job.status == JobStatus.succeeded and job.output_model_id is not None  # the model is kept
    assert job.error == warnings[0].removeprefix("WARNING: ")  # the notice the Jobs tab shows as a warning


@SQLITE_ONLY
def test_an_lr_find_job_records_the_curve_and_names_the_suggestion(workbench_env, session):
    base = add_base_model(session, workbench_env)
    chat = add_dataset(session, workbench_env, DatasetKind.chat, chat_lines(200), "chat")
    text = add_dataset(session, workbench_env, DatasetKind.text, ['{"text": "a document"}'], "corpus")
    params = {"dataset_id": chat.id, "model_id": base.id, "steps": 30, "batch_size": 4, "block_size": 64,
              "device": "cpu"}
    for wrong, field, words in (({**params, "model_id": None}, "model_id", "is required with a chat dataset"),
                                ({**params, "dataset_id": text.id}, "model_id", "must be empty with a text dataset"),
                                ({**params, "end_lr": 1e-8}, "end_lr", "must be above start_lr")):
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, "lr_find", {k: v for k, v in wrong.items() if v is not None})
        assert caught.value.field == field and words in caught.value.message, caught.value

    job = run_job(session, workbench_env, "lr_find", params)
    rows = session.execute(select(Metric.name, Metric.step, Metric.value).where(Metric.job_id == job.id)).all()
    by_name: dict[str, dict[int, float]] = {}
    for name, step, value in rows:
        by_name.setdefault(name, {})[step] = value
    assert len(by_name["lr"]) >= 10 and set(by_name["smoothed_loss"]) == set(by_name["loss"])
    rates = [by_name["lr"][step] for step in sorted(by_name["lr"])]
    assert rates[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(rates, rates[1:]))
    suggested = next(iter(by_name["suggested_lr"].values()))
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == job.id)))
    assert 1e-7 < suggested < 1 and f"succeeded: suggested learning rate {suggested:.2g}" in lines[-1], lines[-1]
    marker = sorted(by_name["suggested_marker"])
    assert len(marker) == 2 and marker[1] == marker[0] + 1  # two neighbouring steps: a near-vertical line
    assert job.output_model_id is None and (workbench_env.data_dir / job.run_dir / "lr_find.json").is_file()
    assert not (workbench_env.data_dir / job.run_dir / "range_test").exists()


@SQLITE_ONLY
def test_an_lr_find_job_on_a_text_dataset_tests_pretraining_a_new_model(workbench_env, session):
    import json
    import random

    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran past an old red barn near the river".split()
    documents = [json.dumps({"text": " ".join(rng.choice(words) for _ in range(60)) + "."}) for _ in range(120)]
    text = add_dataset(session, workbench_env, DatasetKind.text, documents, "corpus")
    job = run_job(session, workbench_env, "lr_find", {"dataset_id": text.id, "preset": "tiny", "steps": 20,
                                                      "batch_size": 4, "block_size": 32, "device": "cpu"})
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == job.id)))
    assert any("range test of pretraining the tiny preset" in line for line in lines), lines
    assert lines[-1].startswith("succeeded: suggested learning rate"), lines[-1]
    steps = set(session.scalars(select(Metric.step).where(Metric.job_id == job.id, Metric.name == "lr")))
    assert len(steps) >= 10 and job.output_model_id is None
