"""A training job that cannot fit is refused at submit (worker/kinds/fit.py through each kind's `check`):
too big for the workers' memory, a schedule that makes the run pointless, a dataset smaller than one
block. Real databases (SQLite and PostgreSQL) through `worker.jobs.lifecycle.create_job`, and once over HTTP;
nothing is stored when a job is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from db.models import Dataset, DatasetKind, Job, Model, ModelKind
from db.settings import get_settings
from llm.memory import human_gb, training_memory
from llm.train_config import TrainConfig, fit_schedule_to_steps, schedule_problems
from tests.conftest import TRAINER
from tests.support.records import add_chat_dataset_row, add_model_row
from worker.jobs import lifecycle as jobs
from worker.jobs.context import prepared_dir_for
from worker.jobs.lifecycle import JobParamsError
from worker.jobs.presence import WorkerPresence, seen_workers

MACHINE_RAM = human_gb(psutil.virtual_memory().total)


def add_text_dataset(session, stats: dict | None = None, name: str = "corpus") -> Dataset:
    row = Dataset(name=name, kind=DatasetKind.text, format="txt", path="datasets/x/corpus.txt",
                  original_filename="corpus.txt", size_bytes=10, stats=stats if stats is not None else {})
    session.add(row)
    session.commit()
    return row


def job_count(session) -> int:
    return session.scalar(select(func.count()).select_from(Job))


def refused(session, kind: str, params: dict) -> JobParamsError:
    before = job_count(session)
    with pytest.raises(JobParamsError) as caught:
        jobs.create_job(session, kind, params)
    assert job_count(session) == before
    return caught.value


# ----------------------------------------------------------------------------- memory

def test_a_pretrain_batch_too_big_for_the_machine_is_refused_with_the_estimate(workbench_env, job_queue, session):
    dataset = add_text_dataset(session)
    error = refused(session, "pretrain", {"dataset_id": dataset.id, "batch_size": 4096, "block_size": 8192,
                                          "device": "cpu"})
    assert error.field == "batch_size", str(error)
    assert "this run needs about" in error.message and "GB" in error.message
    # No worker of this test's queue reported its capacity: this machine's RAM, and the message says so.
    assert f"the workers have {MACHINE_RAM} (this machine's RAM; no worker has reported its own)" in error.message
    assert "lower batch_size or block_size" in error.message
    # The figure in the message is llm.memory's for that shape (tiny: 2 layers x 64, gpt2's padded vocab).
    needed = training_memory(total_params=0, trainable_params=0, n_layer=2, n_embd=64, vocab_size=50304,
                             batch_size=4096, length=8192).total
    assert human_gb(needed).split()[0] in error.message


def test_a_model_too_big_for_the_machine_is_refused_on_its_width(workbench_env, job_queue, session):
    dataset = add_text_dataset(session)
    error = refused(session, "pretrain", {"dataset_id": dataset.id, "n_layer": 96, "n_embd": 8192, "n_head": 64,
                                          "device": "cpu"})
    assert error.field == "n_embd", str(error)
    assert "smaller preset or lower n_layer / n_embd" in error.message
    # The same model on a batch that is the largest part names the batch instead.
    error = refused(session, "pretrain", {"dataset_id": dataset.id, "preset": "small", "block_size": 8192,
                                          "batch_size": 512, "device": "cpu"})
    assert error.field == "block_size", str(error)


def test_a_run_that_fits_is_accepted(workbench_env, job_queue, session):
    dataset = add_text_dataset(session)
    job = jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "device": "cpu"})
    assert job.status.value == "queued"


def test_sft_memory_counts_the_adapter_or_every_weight(workbench_env, session):
    chat = add_chat_dataset_row(session)
    huge = add_model_row(session, n_layer=96, n_embd=8192)
    lora = refused(session, "sft", {"model_id": huge.id, "dataset_id": chat.id, "device": "cpu"})
    assert lora.field == "model_id" and "choose a smaller model" in lora.message, str(lora)
    full = refused(session, "sft", {"model_id": huge.id, "dataset_id": chat.id, "method": "full", "device": "cpu"})
    assert full.field == "method" and "choose the method lora" in full.message, str(full)

    small = add_model_row(session, n_layer=2, n_embd=64)
    batch = refused(session, "sft", {"model_id": small.id, "dataset_id": chat.id, "batch_size": 4096,
                                     "device": "cpu"})
    assert batch.field == "batch_size" and "GB" in batch.message, str(batch)
    assert jobs.create_job(session, "sft", {"model_id": small.id, "dataset_id": chat.id, "device": "cpu"}).id


def test_preference_memory_counts_both_answers_and_what_the_head_computes(workbench_env, session):
    """A pair is two sequences in one forward; a reward model's head gives one number a position, a DPO policy's a
    vocabulary's worth (its log-probs), so at the same shape DPO holds far more logits. Each refuses what cannot fit
    on the field to change."""
    from web import services

    pairs = add_pairs_dataset(session)
    small = add_model_row(session, n_layer=2, n_embd=64)
    params = {"model_id": small.id, "dataset_id": pairs.id, **MID_SIZED, "device": "cpu"}
    sft = services.estimate_run("sft", {**params, "dataset_id": add_chat_dataset_row(session).id})
    reward, dpo = services.estimate_run("reward", params), services.estimate_run("dpo", params)
    assert reward["tokens_per_step"] == dpo["tokens_per_step"] == 2 * sft["tokens_per_step"]
    assert sft["memory_bytes"] < dpo["memory_bytes"] and reward["memory_bytes"] < dpo["memory_bytes"]
    assert "est_seconds" in reward and "est_seconds" in dpo

    huge, gpt2_sized = add_model_row(session, n_layer=96, n_embd=8192), add_model_row(session, n_layer=12, n_embd=768)
    for kind in ("reward", "dpo"):
        lora = refused(session, kind, {"model_id": huge.id, "dataset_id": pairs.id, "device": "cpu"})
        assert lora.field == "model_id" and "choose a smaller model" in lora.message, str(lora)
        batch = refused(session, kind, {**params, "model_id": gpt2_sized.id, "batch_size": 4096})
        assert batch.field == "batch_size" and "GB" in batch.message, str(batch)


def test_the_api_refuses_a_run_too_big_with_the_field(client, session):
    dataset = add_text_dataset(session)
    response = client.post("/api/jobs", auth=TRAINER, json={"kind": "pretrain", "params": {
        "dataset_id": dataset.id, "batch_size": 4096, "block_size": 8192, "device": "cpu"}})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "params", "batch_size"] and "needs about" in error["msg"]
    assert job_count(session) == 0


def reporting_worker(node: str, ram_bytes: int, gpu_memory_bytes: list[int] | None = None) -> WorkerPresence:
    """A worker presence of the test's queue that beat once with this capacity (stop() removes it)."""
    settings = get_settings()
    presence = WorkerPresence(settings.broker_url, node, settings.worker_queues, settings.heartbeat_seconds,
                              settings.stale_after_seconds,
                              capacity={"ram_bytes": ram_bytes, "gpu_memory_bytes": gpu_memory_bytes or []})
    assert presence.beat()
    return presence


# batch 32 x block 256 on the tiny preset: ~2.8 GB on the CPU, ~4.4 GB on a GPU (llm.memory).
MID_SIZED = {"batch_size": 32, "block_size": 256}


def test_the_largest_live_workers_capacity_is_compared_not_this_machines(workbench_env, job_queue, session):
    dataset = add_text_dataset(session)
    params = {"dataset_id": dataset.id, **MID_SIZED, "device": "cpu"}
    needed = training_memory(total_params=0, trainable_params=0, n_layer=2, n_embd=64, vocab_size=50304,
                             batch_size=32, length=256).total
    assert needed < psutil.virtual_memory().total  # fits this machine: only the worker's figure can refuse it
    small = reporting_worker("wbtest-small@box", ram_bytes=2_000_000_000)
    try:
        error = refused(session, "pretrain", params)
        assert error.field == "batch_size", str(error)
        assert f"this run needs about {human_gb(needed)} of RAM" in error.message
        assert "the workers have 2.0 GB (the RAM of worker wbtest-small@box, the largest of 1 live worker)" \
            in error.message
        # A second, bigger worker may take the job: the largest live capacity counts.
        big = reporting_worker("wbtest-big@box", ram_bytes=8_000_000_000)
        try:
            assert jobs.create_job(session, "pretrain", params).status.value == "queued"
        finally:
            big.stop()
        # Once the big one is gone, the small one refuses it again (its record is what is read).
        assert "wbtest-small@box" in refused(session, "pretrain", params).message
    finally:
        small.stop()
    # No worker left: this machine's RAM again, said so.
    assert jobs.create_job(session, "pretrain", params).status.value == "queued"


def test_a_worker_that_stopped_beating_does_not_count(workbench_env, job_queue, session, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HEARTBEAT_SECONDS", "0.1")
    monkeypatch.setenv("WORKBENCH_STALE_AFTER_SECONDS", "0.5")
    dataset = add_text_dataset(session)
    big = reporting_worker("wbtest-gone@box", ram_bytes=10**15)  # would take anything
    try:
        time.sleep(0.8)  # listed as down now, not yet expired
        error = refused(session, "pretrain", {"dataset_id": dataset.id, "batch_size": 4096, "block_size": 8192,
                                              "device": "cpu"})
        assert "no worker has reported its own" in error.message, str(error)
    finally:
        big.stop()


def test_a_gpu_job_is_compared_with_the_workers_gpu_and_auto_follows_them(workbench_env, job_queue, session):
    dataset = add_text_dataset(session)
    gpu_worker = reporting_worker("wbtest-gpu@box", ram_bytes=10**12, gpu_memory_bytes=[3_000_000_000])
    try:
        # "auto" on a machine without CUDA still runs on the workers' GPU: the GPU estimate and figure.
        needed = training_memory(total_params=0, trainable_params=0, n_layer=2, n_embd=64, vocab_size=50304,
                                 batch_size=32, length=256, device_type="cuda").total
        for device in ("auto", "cuda"):
            error = refused(session, "pretrain", {"dataset_id": dataset.id, **MID_SIZED, "device": device})
            assert f"needs about {human_gb(needed)} of GPU memory" in error.message, str(error)
            assert "the workers have 3.0 GB (the GPU of worker wbtest-gpu@box, the largest of 1 live worker)" \
                in error.message
        # Its RAM is what a CPU job is compared with.
        assert jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, **MID_SIZED, "device": "cpu"}).id
    finally:
        gpu_worker.stop()


# ----------------------------------------------------------------------------- the form's preview

def add_pairs_dataset(session) -> Dataset:
    row = Dataset(name="pairs", kind=DatasetKind.preference, format="jsonl", path="datasets/p/pairs.jsonl",
                  original_filename="pairs.jsonl", size_bytes=10, stats={"pairs": 3})
    session.add(row)
    session.commit()
    return row


def preview_and_submit_params(session, kind: str) -> dict:
    if kind == "pretrain":
        return {"dataset_id": add_text_dataset(session).id, **MID_SIZED, "device": "cpu"}
    dataset = add_pairs_dataset(session) if kind in ("reward", "dpo") else add_chat_dataset_row(session)
    return {"model_id": add_model_row(session, n_layer=2, n_embd=64).id, "dataset_id": dataset.id,
            **MID_SIZED, "device": "cpu"}


@pytest.mark.parametrize("kind", ["pretrain", "sft", "reward", "dpo"])
def test_the_forms_preview_shows_the_figure_the_submit_check_compares(workbench_env, job_queue, session, kind):
    """The Train form's memory figure is the kind's own estimate: a worker with exactly that much takes the job,
    one with a byte less refuses it, and the preview names that worker's figure."""
    from web import services

    params = preview_and_submit_params(session, kind)
    needed = services.estimate_run(kind, params)["memory_bytes"]
    exact = reporting_worker("wbtest-exact@box", ram_bytes=needed)
    try:
        assert jobs.create_job(session, kind, params).status.value == "queued"
    finally:
        exact.stop()
    short = reporting_worker("wbtest-short@box", ram_bytes=needed - 1)
    try:
        shown = services.estimate_run(kind, params)
        assert shown["memory_bytes"] == needed and shown["worker_memory_bytes"] == needed - 1
        assert "wbtest-short@box" in shown["worker_memory_source"]
        error = refused(session, kind, params)
        assert f"needs about {human_gb(needed)} of RAM" in error.message and "wbtest-short@box" in error.message
    finally:
        short.stop()


@pytest.mark.parametrize("kind, wrong", [
    ("pretrain", {"n_embd": 4}),                 # below the declared minimum (8)
    ("pretrain", {"n_embd": 100, "n_head": 3}),  # the kind's own rule on the shape
    ("pretrain", {"preset": "enormous"}),
    ("pretrain", {"tokenizer": "no-such-tokenizer"}),
    ("pretrain", {"batch_size": "8"}),           # typed as text: submit takes numbers only
    ("sft", {"lora_r": 0}),
    ("sft", {"lora_targets": "everything"}),
])
def test_a_value_submit_refuses_is_refused_by_the_preview_in_the_same_words(workbench_env, session, kind, wrong):
    from web import services

    params = {**preview_and_submit_params(session, kind), **wrong}
    error = refused(session, kind, params)
    with pytest.raises(services.InvalidInput) as caught:
        services.estimate_run(kind, params)
    assert (caught.value.field, caught.value.message) == (error.field, f"{error.field}: {error.message}")
    if kind == "pretrain":  # a form without its dataset yet is previewed all the same
        del params["dataset_id"]
        with pytest.raises(services.InvalidInput) as caught:
            services.estimate_run(kind, params)
        assert caught.value.field == error.field


# ----------------------------------------------------------------------------- schedule

def test_schedule_defaults_shrink_with_a_short_run():
    defaults = {"max_steps": 1000, "warmup": 100, "eval_every": 250, "checkpoint_every": 500}
    short = {**defaults, "max_steps": 100}
    assert fit_schedule_to_steps(short, defaults) == {"warmup": 10, "eval_every": 25, "checkpoint_every": 50}
    assert fit_schedule_to_steps({**short, "warmup": 5, "eval_every": 0}, defaults) == {"checkpoint_every": 50}
    assert fit_schedule_to_steps({**defaults, "max_steps": 50_000}, defaults) == {}
    one = fit_schedule_to_steps({**defaults, "max_steps": 1}, defaults)
    assert one["warmup"] == 0 and one["eval_every"] >= 1 and one["checkpoint_every"] >= 1


def test_schedule_problems_say_what_does_not_fit():
    problems = schedule_problems({"max_steps": 100, "warmup": 100, "eval_every": 250, "checkpoint_every": 500})
    by_field = {problem.field: problem for problem in problems}
    assert by_field["warmup"].refuses and "warmup 100 ≥ max_steps 100: the learning rate never decays" in \
        by_field["warmup"].message
    assert not by_field["eval_every"].refuses and "evaluated only once" in by_field["eval_every"].message
    assert not by_field["checkpoint_every"].refuses
    assert schedule_problems({"max_steps": 100, "warmup": 10, "eval_every": 25, "checkpoint_every": 50}) == []


def test_a_short_pretrain_run_stores_a_schedule_that_fits(workbench_env, session):
    dataset = add_text_dataset(session)
    job = jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 100})
    stored = session.get(Job, job.id).params
    assert (stored["warmup"], stored["eval_every"], stored["checkpoint_every"]) == (10, 25, 50)
    defaults = TrainConfig()
    long = jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 5000, "warmup": 7})
    assert (long.params["warmup"], long.params["eval_every"]) == (7, defaults.eval_every)


def test_a_warmup_as_long_as_the_run_is_refused(workbench_env, session):
    dataset = add_text_dataset(session)
    error = refused(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 100, "warmup": 150})
    assert error.field == "warmup" and "never decays" in error.message


def test_a_short_sft_run_scales_its_own_defaults(workbench_env, session):
    from llm.sft_config import SFT_DEFAULTS

    chat = add_chat_dataset_row(session)
    model = add_model_row(session, n_layer=2, n_embd=64)
    job = jobs.create_job(session, "sft", {"model_id": model.id, "dataset_id": chat.id, "max_steps": 20})
    share = 20 / SFT_DEFAULTS.loop["max_steps"]
    assert job.params["eval_every"] == round(SFT_DEFAULTS.loop["eval_every"] * share)
    assert job.params["checkpoint_every"] == round(SFT_DEFAULTS.loop["checkpoint_every"] * share)
    error = refused(session, "sft", {"model_id": model.id, "dataset_id": chat.id, "max_steps": 20, "warmup": 20})
    assert error.field == "warmup"


# ----------------------------------------------------------------------------- data

def test_a_dataset_smaller_than_one_block_is_refused_in_the_forms_terms(workbench_env, session):
    tiny = add_text_dataset(session, {"documents": 1, "bytes": 3}, name="three letters")
    error = refused(session, "pretrain", {"dataset_id": tiny.id, "block_size": 128})
    assert error.field == "block_size", str(error)
    assert "too small for block_size 128" in error.message and "three letters" in error.message
    assert "--" not in error.message and str(workbench_env.data_dir) not in error.message
    # Enough bytes for a block is accepted (the exact count is known only once it is tokenized).
    enough = add_text_dataset(session, {"documents": 2, "bytes": 5000})
    assert jobs.create_job(session, "pretrain", {"dataset_id": enough.id, "block_size": 128}).id


def test_prepared_token_counts_are_exact(workbench_env, session):
    dataset = add_text_dataset(session, {"documents": 20, "bytes": 5000})
    prepared = prepared_dir_for(workbench_env, dataset.id, "gpt2")
    prepared.mkdir(parents=True)
    (prepared / "stats.json").write_text(json.dumps({"train": {"tokens": 300}, "val": {"tokens": 20}}))
    error = refused(session, "pretrain", {"dataset_id": dataset.id, "block_size": 64})
    assert error.field == "block_size" and "val part holds 20 tokens" in error.message, str(error)
    assert "lower block_size to 19 or less" in error.message
    error = refused(session, "pretrain", {"dataset_id": dataset.id, "block_size": 512})
    assert "train part holds 300 tokens" in error.message
    # An empty val part is not evaluated, so it does not stand in the way.
    (prepared / "stats.json").write_text(json.dumps({"train": {"tokens": 300}, "val": {"tokens": 0}}))
    assert jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "block_size": 64}).id


def test_a_model_row_without_its_shape_is_not_estimated(workbench_env, session):
    chat = add_chat_dataset_row(session)
    shapeless = Model(name="by hand", kind=ModelKind.base, tokenizer="gpt2", config={}, path="models/h")
    session.add(shapeless)
    session.commit()
    assert jobs.create_job(session, "sft", {"model_id": shapeless.id, "dataset_id": chat.id}).id


@pytest.mark.parametrize("kind", ["reward", "dpo"])
def test_preference_runs_get_the_same_schedule_rules(workbench_env, session, kind):
    pairs = add_pairs_dataset(session)
    model = add_model_row(session, n_layer=2, n_embd=64)
    params = {"model_id": model.id, "dataset_id": pairs.id, "max_steps": 20}
    job = jobs.create_job(session, kind, params)
    assert job.params["eval_every"] < 20 and job.params["warmup"] < 20, job.params
    error = refused(session, kind, {**params, "warmup": 25})
    assert error.field == "warmup" and "never decays" in error.message


@pytest.mark.subprocess
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_real_worker_reports_its_capacity_and_the_check_names_it(workbench_env, job_queue, session, tmp_path):
    """`python -m worker.runtime.main` beats its RAM (and its GPUs' memory where CUDA is) into its presence record."""
    settings = get_settings()
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "worker.runtime.main", "--loglevel", "warning"],
                                   cwd=Path(__file__).resolve().parents[2], stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (workers := seen_workers(settings.broker_url, job_queue, settings.stale_after_seconds)):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        [worker] = workers
        import torch

        gpus = ([torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
                if torch.cuda.is_available() else [])
        assert worker["capacity"] == {"ram_bytes": psutil.virtual_memory().total, "gpu_memory_bytes": gpus}
        dataset = add_text_dataset(session)
        error = refused(session, "pretrain", {"dataset_id": dataset.id, "batch_size": 4096, "block_size": 8192,
                                              "device": "cpu"})
        assert f"the RAM of worker {worker['node']}, the largest of 1 live worker" in error.message, str(error)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
