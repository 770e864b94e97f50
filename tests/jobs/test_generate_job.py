"""The `generate` job kind in the worker: validation against its declaration, a run through the real runner
(Prompt rows shared per dataset, K Completion rows per prompt split between two models, each regenerated
exactly from its stored row), and interruptions that lose and double nothing: a cancel and resume, a stale
attempt that may no longer write, and a worker process killed with SIGKILL mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Completion, DatasetKind, Job, JobStatus, Metric, Prompt
from llm.candidates import MAX_SEED, regenerate
from llm.checkpoint import load_model
from tests.conftest import StopOnQuestion
from tests.support.jobs import claim
from tests.support.records import add_base_model, add_dataset, chat_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError
from worker.kinds.generate import handler as generate
from worker.runtime.runner import _make_context, execute_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONVERSATION = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "A fruit?"}]


def prompt_lines() -> list[str]:
    """Three distinct prompts (one a conversation with a system turn) and a repeated one."""
    return [json.dumps({"prompt": "Name a colour."}), json.dumps({"prompt": CONVERSATION}),
            json.dumps({"prompt": "Name a colour."}), json.dumps({"prompt": [{"role": "user", "content": "Why?"}]})]


def generate_params(model_id: int, dataset_id: int, **overrides) -> dict:
    return {"model_id": model_id, "dataset_id": dataset_id, "k": 2, "max_new_tokens": 4, "seed": 11, **overrides}


def completions_per_prompt(session, job_id: int) -> Counter:
    return Counter(session.scalars(select(Completion.prompt_id).where(Completion.job_id == job_id)))


def answers(session, job_id: int) -> dict:
    rows = session.scalars(select(Completion).where(Completion.job_id == job_id))
    return {(c.prompt_id, c.model_id, c.seed, c.sampling["sample_index"]): (c.text, c.token_count) for c in rows}


def test_generate_params_are_checked_against_the_declaration(workbench_env, session):
    base = add_base_model(session, workbench_env)
    prompts = add_dataset(session, workbench_env, DatasetKind.prompts, prompt_lines(), "prompts")
    chat = add_dataset(session, workbench_env, DatasetKind.chat, chat_lines(4), "chat")
    cases = [
        (generate_params(base.id, prompts.id, k=1), "k", "at least 2"),
        (generate_params(base.id, chat.id), "dataset_id", "needs a prompts dataset"),
        (generate_params(base.id, prompts.id, model_id_b=999), "model_id_b", "no model with id 999"),
        (generate_params(base.id, prompts.id, temperature_b=0.5), "temperature_b", "model B only"),
        (generate_params(base.id, prompts.id, temperature=0.0), "temperature", "identical"),
        (generate_params(base.id, prompts.id, top_k=1), "top_k", "identical"),
        (generate_params(base.id, prompts.id, model_id_b=base.id, temperature=0.0), "temperature_b", "A's"),
        (generate_params(base.id, prompts.id, seed=MAX_SEED + 1), "seed", "at most"),
    ]
    for params, field, words in cases:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, "generate", params)
        assert caught.value.field == field and words in caught.value.message, str(caught.value)
    assert session.scalar(select(func.count()).select_from(Job)) == 0

    # The stored row says what runs: a drawn seed, model B's temperature; one greedy answer per model is fine.
    job = jobs.create_job(session, "generate", generate_params(base.id, prompts.id, seed=None, model_id_b=base.id,
                                                              temperature=0.7))
    assert 0 <= job.params["seed"] <= MAX_SEED and job.params["temperature_b"] == 0.7
    assert job.input_model_id == base.id and job.dataset_id == prompts.id
    greedy = jobs.create_job(session, "generate", generate_params(base.id, prompts.id, model_id_b=base.id,
                                                                 temperature=0.0, temperature_b=1.0))
    assert [slot.count for slot in generate.slots(greedy.params)] == [1, 1]


def test_a_generate_job_stores_k_reproducible_completions_per_prompt(workbench_env, session, one_torch_thread):
    base = add_base_model(session, workbench_env)
    other = add_base_model(session, workbench_env, "other", seed=1)
    prompts = add_dataset(session, workbench_env, DatasetKind.prompts, prompt_lines(), "prompts")
    params = generate_params(base.id, prompts.id, k=3, model_id_b=other.id, temperature=0.9, temperature_b=1.3)
    job = jobs.create_job(session, "generate", params)
    assert execute_job(job.id, claim(session, job.id), workbench_env) == JobStatus.succeeded

    session.expire_all()
    assert session.get(Job, job.id).progress == 1.0
    prompt_rows = list(session.scalars(select(Prompt).order_by(Prompt.id)))
    assert [p.dataset_id for p in prompt_rows] == [prompts.id] * 3  # the repeated prompt is answered once
    assert [(p.text, p.messages) for p in prompt_rows] == [("Name a colour.", None), ("A fruit?", CONVERSATION),
                                                           ("Why?", None)]
    rows = list(session.scalars(select(Completion).where(Completion.job_id == job.id)))
    assert completions_per_prompt(session, job.id) == {p.id: 3 for p in prompt_rows}
    for prompt in prompt_rows:  # K = 3 split between the models: two from A, one from B, each at its temperature
        mine = [c for c in rows if c.prompt_id == prompt.id]
        assert sorted((c.model_id, c.sampling["temperature"]) for c in mine) == \
            sorted([(base.id, 0.9), (base.id, 0.9), (other.id, 1.3)])
    assert all(0 <= c.seed <= MAX_SEED and 0 <= c.token_count <= 4 for c in rows)
    last = session.scalars(select(Metric).where(Metric.job_id == job.id, Metric.name == "prompts_done")
                           .order_by(Metric.step.desc())).first()
    assert last.value == 3 and {"completions", "tokens_per_s"} <= set(
        session.scalars(select(Metric.name).where(Metric.job_id == job.id)))

    # Any stored completion comes back exactly from its row: model, prompt, sampling settings and seed.
    chosen = next(c for c in rows if c.model_id == other.id and c.prompt.messages)
    model, tokenizer = load_model(workbench_env.data_dir / other.path, data_dir=workbench_env.data_dir)
    again = regenerate(model, tokenizer, chosen.prompt.messages, chosen.sampling, chosen.seed)
    assert (again.text, again.token_count) == (chosen.text, chosen.token_count)

    # A second job over the same dataset reuses its Prompt rows.
    second = jobs.create_job(session, "generate", generate_params(base.id, prompts.id))
    assert execute_job(second.id, claim(session, second.id), workbench_env) == JobStatus.succeeded
    assert session.scalar(select(func.count()).select_from(Prompt)) == 3
    assert completions_per_prompt(session, second.id) == {p.id: 2 for p in prompt_rows}


def test_cancel_resume_and_a_stale_attempt_neither_lose_nor_double_completions(workbench_env, session,
                                                                                 one_torch_thread):
    base = add_base_model(session, workbench_env)
    lines = [json.dumps({"prompt": f"Say {word}."}) for word in ("one", "two", "three", "four", "five")]
    prompts = add_dataset(session, workbench_env, DatasetKind.prompts, lines, "prompts")
    interrupted = jobs.create_job(session, "generate", generate_params(base.id, prompts.id))
    first = claim(session, interrupted.id)
    # Cancelled before its third prompt (should_stop is asked once per prompt).
    outcome = generate.run(_make_context(session, interrupted.id, first, workbench_env, StopOnQuestion(3)))
    assert outcome.stopped and "after 2 of 5 prompts" in outcome.summary
    assert sorted(completions_per_prompt(session, interrupted.id).values()) == [2, 2]
    assert session.get(Job, interrupted.id).progress == pytest.approx(2 / 5)

    # The reaper hands it to another worker; the first attempt, presumed dead, may write nothing more.
    assert jobs.finish_job(session, interrupted.id, first, JobStatus.queued, log_line="requeued", event="requeued")
    second = claim(session, interrupted.id)
    stale = generate.run(_make_context(session, interrupted.id, first, workbench_env, StopOnQuestion(10 ** 6)))
    assert stale.stopped and "no longer owns" in stale.summary
    assert sum(completions_per_prompt(session, interrupted.id).values()) == 4

    outcome = generate.run(_make_context(session, interrupted.id, second, workbench_env, StopOnQuestion(10 ** 6)))
    assert not outcome.stopped
    assert list(completions_per_prompt(session, interrupted.id).values()) == [2] * 5
    steps = list(session.scalars(select(Metric.step).where(Metric.job_id == interrupted.id,
                                                           Metric.name == "prompts_done").order_by(Metric.id)))
    assert steps == [1, 2, 3, 4, 5]  # each prompt's metrics once, in order

    # The seeds depend on the job's seed and each prompt's place only: resuming changed no answer.
    straight = jobs.create_job(session, "generate", generate_params(base.id, prompts.id))
    assert execute_job(straight.id, claim(session, straight.id), workbench_env) == JobStatus.succeeded
    assert answers(session, straight.id) == answers(session, interrupted.id)


@pytest.mark.subprocess
def test_a_worker_killed_mid_run_loses_no_prompt_and_the_next_attempt_doubles_none(workbench_env, session,
                                                                                    one_torch_thread):
    prompt_count = 40  # enough that the kill, two prompts in, lands mid-run
    base = add_base_model(session, workbench_env)
    lines = [json.dumps({"prompt": f"Prompt number {n}: say something."}) for n in range(prompt_count)]
    prompts = add_dataset(session, workbench_env, DatasetKind.prompts, lines, "prompts")
    job = jobs.create_job(session, "generate", generate_params(base.id, prompts.id, max_new_tokens=16))
    attempt = claim(session, job.id)
    session.commit()
    worker = subprocess.Popen(
        [sys.executable, "-c", "import sys; from worker.runtime.runner import execute_job; "
                               "execute_job(int(sys.argv[1]), int(sys.argv[2]))", str(job.id), str(attempt)],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while sum(completions_per_prompt(session, job.id).values()) < 4:  # two prompts answered
            session.commit()
            assert worker.poll() is None, "the worker process ended before it was killed"
            assert time.monotonic() < deadline, "the worker wrote no completion in 120 s"
            time.sleep(0.02)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    session.expire_all()
    counts = completions_per_prompt(session, job.id)
    assert len(counts) < prompt_count, "the run finished before the kill; give it more prompts"
    assert set(counts.values()) == {2}  # whole prompts only: the one in flight left nothing behind
    assert session.get(Job, job.id).progress == pytest.approx(len(counts) / prompt_count)

    # As the reaper would: requeue the dead attempt; the next one skips the answered prompts.
    assert jobs.finish_job(session, job.id, attempt, JobStatus.queued, log_line="worker lost", event="requeued")
    assert execute_job(job.id, claim(session, job.id), workbench_env) == JobStatus.succeeded
    session.expire_all()
    assert list(completions_per_prompt(session, job.id).values()) == [2] * prompt_count


def test_two_jobs_storing_a_new_datasets_prompts_at_once_store_each_once(workbench_env, session):
    """Insert-or-get: while one job inserts the dataset's prompts, another inserts and commits the same ones
    first; the first's insert yields to the unique (dataset_id, key_sha256) and both get the same ids."""
    from sqlalchemy import event

    from db.session import SessionLocal

    prompts = add_dataset(session, workbench_env, DatasetKind.prompts, prompt_lines(), "prompts")
    session.commit()
    conversations = [[{"role": "user", "content": "Name a colour."}], CONVERSATION,
                     [{"role": "user", "content": "Name a colour."}]]
    other_job_ids: list[int] = []
    with SessionLocal(workbench_env.database_url) as late, SessionLocal(workbench_env.database_url) as early:
        @event.listens_for(late, "do_orm_execute")
        def the_other_job_inserts_first(state):
            if state.is_insert and not other_job_ids:
                other_job_ids.extend(generate.prompt_rows(early, prompts.id, conversations))

        late_ids = generate.prompt_rows(late, prompts.id, conversations)
    assert other_job_ids and late_ids == other_job_ids
    assert late_ids[0] == late_ids[2] != late_ids[1]
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Prompt)) == 2
