"""The `sft` job kind in the worker: validation against its declaration, a run through the real runner
(heartbeat, metrics, the Model row with its parent), and cancel + resume continuing from the checkpoint
without duplicated metrics. The learning itself is tested in test_sft.py; here the platform around it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import DatasetKind, Job, JobLog, JobStatus, Metric, Model, ModelKind
from tests.conftest import StopOnQuestion
from tests.support.records import add_base_model, add_dataset, chat_lines
from worker.jobs import lifecycle as jobs
from worker.jobs.params import JobParamsError
from worker.kinds.sft import handler as sft
from worker.runtime.runner import _make_context, execute_job

pytestmark = pytest.mark.slow


def sft_params(model_id: int, dataset_id: int, **overrides) -> dict:
    return {"model_id": model_id, "dataset_id": dataset_id, "max_steps": 6, "batch_size": 4, "block_size": 64,
            "eval_every": 3, "checkpoint_every": 2, "log_every": 1, "device": "cpu", **overrides}


def test_sft_params_are_checked_against_the_declaration(workbench_env, session):
    base = add_base_model(session, workbench_env)
    chat = add_dataset(session, workbench_env, DatasetKind.chat, chat_lines(), "chat")
    text = add_dataset(session, workbench_env, DatasetKind.text, ['{"text": "a document"}'], "corpus")
    cases = [
        ({"dataset_id": chat.id}, "model_id", "is required"),
        (sft_params(base.id, text.id), "dataset_id", "needs a chat dataset"),
        (sft_params(999, chat.id), "model_id", "no model with id 999"),
        (sft_params(base.id, chat.id, lora_r=0), "lora_r", "positive whole number"),
        (sft_params(base.id, chat.id, lora_targets="everything"), "lora_targets", "one of"),
        (sft_params(base.id, chat.id, preset="tiny"), "preset", "unknown parameter"),
        # LoRA with FSDP (llm/sharding.py) is refused at submit, also when "auto" stands for LoRA.
        (sft_params(base.id, chat.id, method="lora", parallelism="fsdp"), "parallelism", "trains all weights"),
    ]
    for params, field, words in cases:
        with pytest.raises(JobParamsError) as caught:
            jobs.create_job(session, "sft", params)
        assert caught.value.field == field and words in caught.value.message, str(caught.value)
    assert session.scalar(select(func.count()).select_from(Job)) == 0

    job = jobs.create_job(session, "sft", sft_params(base.id, chat.id))
    # The row says what runs: the method "auto" resolved on the tiny base (3.3 M parameters: all weights), with
    # its reason, and the learning rate of that method at the base's width (64); SFT's own defaults, not
    # pretraining's.
    from llm.sft_config import SFT_DEFAULTS, SFTConfig

    assert job.params["method"] == "full" and job.params["method_reason"].startswith("all weights: 3.3 M parameters")
    assert job.params["lr"] == SFT_DEFAULTS.full_lr.at(64) and job.params["lora_r"] == SFTConfig().lora_r
    # SFT's warmup default, shrunk with this 6-step run (llm.train_config.fit_schedule_to_steps).
    assert job.params["warmup"] == round(SFT_DEFAULTS.loop["warmup"] * 6 / SFT_DEFAULTS.loop["max_steps"])
    assert "full" not in job.params
    assert job.input_model_id == base.id and job.dataset_id == chat.id
    lora = jobs.create_job(session, "sft", sft_params(base.id, chat.id, method="lora"))
    assert lora.params["method"] == "lora" and lora.params["method_reason"] == "LoRA adapter, as chosen"
    assert lora.params["lr"] == SFT_DEFAULTS.lora_lr.at(64)
    given = jobs.create_job(session, "sft", sft_params(base.id, chat.id, method="full", lr=1e-4))
    assert given.params["lr"] == 1e-4
    with pytest.raises(JobParamsError) as older:  # the parameter's older name, from a script: said what to send
        jobs.create_job(session, "sft", sft_params(base.id, chat.id, full=True))
    assert older.value.field == "full" and older.value.message.startswith('replaced by "method": "full"')


def test_sft_job_runs_through_the_runner_and_records_an_adapter_model(workbench_env, session):
    base = add_base_model(session, workbench_env)
    chat = add_dataset(session, workbench_env, DatasetKind.chat, chat_lines(), "chat")
    job = jobs.create_job(session, "sft", sft_params(base.id, chat.id, name="tiny-chat", method="lora"))
    claimed = jobs.claim_next_job(session, "test-host")
    assert claimed.id == job.id
    assert execute_job(job.id, claimed.attempts, workbench_env) == JobStatus.succeeded

    session.expire_all()
    job = session.get(Job, job.id)
    model = session.get(Model, job.output_model_id)
    assert model.kind == ModelKind.sft and model.parent_model_id == base.id and model.name == "tiny-chat"
    model_dir = workbench_env.data_dir / model.path
    assert (model_dir / "adapter_config.json").is_file() and (model_dir / "adapter_model.safetensors").is_file()
    names = set(session.scalars(select(Metric.name).where(Metric.job_id == job.id)))
    assert {"loss", "val_loss", "mean_token_accuracy", "tokens_per_s"} <= names

    from llm.checkpoint import load_model
    loaded, tokenizer = load_model(model_dir, data_dir=workbench_env.data_dir)
    assert tokenizer.name == "gpt2" and loaded.config.n_embd == 64


def test_a_cancelled_sft_job_resumes_from_its_checkpoint_without_duplicate_metrics(workbench_env, session):
    base = add_base_model(session, workbench_env)
    chat = add_dataset(session, workbench_env, DatasetKind.chat, chat_lines(), "chat")
    job = jobs.create_job(session, "sft", sft_params(base.id, chat.id, method="lora"))
    ctx = _make_context(session, job.id, 1, workbench_env, StopOnQuestion(3))
    outcome = sft.run(ctx)
    assert outcome.stopped and "stopped at step 3" in outcome.summary

    # A row stored before the method setting says "full": false instead: it resumes as the LoRA run it was.
    job.params = {**{name: value for name, value in job.params.items() if name not in ("method", "method_reason")},
                  "full": False}
    session.commit()

    ctx = _make_context(session, job.id, 2, workbench_env, StopOnQuestion(10 ** 6))
    outcome = sft.run(ctx)
    assert not outcome.stopped and "finished at step 6" in outcome.summary
    steps = list(session.scalars(select(Metric.step).where(Metric.job_id == job.id, Metric.name == "loss")
                                 .order_by(Metric.id)))
    assert steps == sorted(set(steps)) and steps[-1] == 6  # each step once, in order
    run_dir = workbench_env.data_dir / "runs" / str(job.id)
    assert (run_dir / "adapter_model.safetensors").is_file() and not (run_dir / "model.safetensors").exists()
    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == job.id)))
    assert any("LoRA adapter, as stored (the job predates the method setting)" in line for line in lines), lines
