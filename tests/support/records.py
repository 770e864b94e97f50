"""Rows the API, job and UI tests start from, added straight to the database: a tiny base model, datasets,
a finished generate job with its candidates, jobs and models of an owner, chat models for the arena, a labeled
project, and the corpus and pretrain parameters the API tests upload and submit."""

from __future__ import annotations

import json
import random

import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import (Comparison, Completion, Dataset, DatasetKind, Job, JobStatus, LabelingPair, LabelingProject,
                       Model, ModelKind, Prompt, Role)
from db.users import create_user
from llm.preference_labels import Label
from tests.conftest import TRAINER
from tests.support.polite import polite_pairs
from web.services.labeling import answer_id, create_project
from worker.jobs.lifecycle import record_event


def add_base_model(session, settings, name: str = "base", seed: int = 0, preset: str = "tiny",
                   block_size: int = 64) -> Model:
    """A GPT-2-vocabulary base model of `preset` (weights from `seed`) saved under models/<name>, row
    "<preset>-<name>"."""
    from llm.checkpoint import save_model
    from llm.model import GPT, config_from_preset
    from llm.tokenizer import get_tokenizer

    torch.manual_seed(seed)
    model = GPT(config_from_preset(preset, get_tokenizer("gpt2").vocab_size, block_size=block_size))
    save_model(model, settings.data_dir / "models" / name, "gpt2")
    row = Model(name=f"{preset}-{name}", kind=ModelKind.base, tokenizer="gpt2", config=model.config.to_dict(),
                path=f"models/{name}")
    session.add(row)
    session.commit()
    return row


def add_dataset(session, settings, kind: DatasetKind, lines: list[str], name: str) -> Dataset:
    row = Dataset(name=name, kind=kind, format="jsonl", path="pending", original_filename=f"{name}.jsonl",
                  size_bytes=0, stats={})
    session.add(row)
    session.flush()
    row.path = f"datasets/{row.id}/original.jsonl"
    path = settings.data_dir / row.path
    path.parent.mkdir(parents=True)
    path.write_text("".join(line + "\n" for line in lines))
    row.size_bytes = path.stat().st_size
    session.commit()
    return row


def chat_lines(count: int = 40) -> list[str]:
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "tiger", "lemon"]
    return [json.dumps({"messages": [{"role": "user", "content": f"Say {word}."},
                                     {"role": "assistant", "content": f"{word} {word}."}]})
            for word in (rng.choice(words) for _ in range(count))]


def make_generate_job(session, prompts=3, answers=3, status=JobStatus.succeeded, chat=True):
    job = Job(kind="generate", status=status, params={}, progress=1.0, attempts=1, cancel_requested=False)
    session.add(job)
    session.flush()
    for p in range(prompts):
        text = f"question {p}?"
        prompt = Prompt(text=text, messages=[{"role": "user", "content": text}] if chat else None)
        session.add(prompt)
        session.flush()
        for a in range(answers):
            session.add(Completion(prompt_id=prompt.id, job_id=job.id, text=f"answer {p}.{a}", sampling={}, seed=a))
    session.commit()
    return job


def shown_id(session, pair: LabelingPair, completion_id: int) -> str:
    """The answer_id a labeler's screen gives completion `completion_id` of `pair` (what a submit names)."""
    return answer_id(session.get(LabelingProject, pair.project_id), pair.id, completion_id)


def make_job(session: Session, owner, status: JobStatus = JobStatus.running, **values) -> int:
    """A job row as the worker leaves it (no queue involved: these tests are about who may change it)."""
    job = Job(kind="pretrain", status=status, params={"max_steps": 100}, owner_id=owner.id, **values)
    session.add(job)
    session.flush()
    job.run_dir = f"runs/{job.id}"
    record_event(session, job.id, "submitted", owner.id)
    session.commit()
    return job.id


def make_model_files(settings, relative: str, config: dict) -> None:
    directory = settings.data_dir / relative
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "model.safetensors").write_bytes(b"weights")


def add_model(session: Session, settings, owner, name: str, kind: ModelKind = ModelKind.base,
              path: str | None = None, config: dict | None = None, **values) -> int:
    model = Model(name=name, kind=kind, tokenizer="gpt2", config={}, path=path or f"models/{name}",
                  owner_id=owner.id, **values)
    session.add(model)
    session.commit()
    make_model_files(settings, model.path, config or {"architecture": "gpt", "tokenizer": "gpt2", "model": {}})
    return model.id


def add_chat_model(session, settings, name, seed, owner=None):
    from llm.checkpoint import save_model
    from llm.model import GPT, config_from_preset
    from llm.tokenizer import get_tokenizer

    torch.manual_seed(seed)
    model = GPT(config_from_preset("tiny", get_tokenizer("gpt2").vocab_size, block_size=64))
    save_model(model, settings.data_dir / "models" / name, "gpt2", extra={"chat": True})
    row = Model(name=name, kind=ModelKind.sft, tokenizer="gpt2", config=model.config.to_dict(), path=f"models/{name}",
                owner_id=owner.id if owner is not None else None)
    session.add(row)
    session.commit()
    return row


def preference_lines(count=24, seed=0):
    return [json.dumps({key: pair[key] for key in ("prompt", "chosen", "rejected")})
            for pair in polite_pairs(count, seed)]


def labeled_project(session):
    """A project whose two pairs both have a consensus: the first answer wins each."""
    trainer = create_user(session, "tina", "password-123", Role.trainer)
    labeler = create_user(session, "lea", "password-123", Role.labeler)
    job = make_generate_job(session, prompts=2, answers=2)
    project = create_project(session, trainer, name="p", source_job_ids=[job.id], overlap=1)
    for pair in session.scalars(select(LabelingPair).where(LabelingPair.project_id == project.id)):
        session.add(Comparison(prompt_id=pair.prompt_id, completion_a_id=pair.completion_a_id,
                               completion_b_id=pair.completion_b_id, label=Label.a, annotator_id=labeler.id,
                               source="label", pair_id=pair.id))
        pair.label_count = 1
    session.commit()
    return project


CORPUS = (
    "The first document is about tokens and how a model sees text.\n\n"
    "A second, longer document. It talks about training a small language model on a laptop CPU, "
    "one step at a time, and watching the loss go down.\n\n"
    "The first document is about tokens and how a model sees text.\n\n"  # a duplicate
    "Short third one.\n"
)


def upload(client: TestClient, content: bytes | str, filename: str = "corpus.txt", *, name: str = "my corpus",
           kind: str = "text", auth: tuple[str, str] = TRAINER):
    data = content.encode() if isinstance(content, str) else content
    return client.post("/api/datasets", auth=auth, files={"file": (filename, data, "application/octet-stream")},
                       data={"name": name, "kind": kind})


def pretrain_params(dataset_id: int, **overrides) -> dict:
    return {"dataset_id": dataset_id, "tokenizer": "gpt2", "preset": "tiny", "max_steps": 5,
            "batch_size": 2, "block_size": 32, **overrides}


def add_model_row(session, n_layer: int, n_embd: int, vocab_size: int = 50304, block_size: int = 64,
                  kind: ModelKind = ModelKind.base) -> Model:
    """A Model row whose config says its shape, with no weights behind it (the submit checks and the forms read
    the row, never the weights)."""
    row = Model(name=f"model-{n_layer}x{n_embd}", kind=kind, tokenizer="gpt2", path="models/m",
                config={"n_layer": n_layer, "n_head": max(1, n_embd // 64), "n_embd": n_embd,
                        "vocab_size": vocab_size, "block_size": block_size, "dropout": 0.0})
    session.add(row)
    session.commit()
    return row


def add_chat_dataset_row(session) -> Dataset:
    """A chat Dataset row with no file behind it (for checks that read the row only)."""
    row = Dataset(name="chats", kind=DatasetKind.chat, format="jsonl", path="datasets/c/chats.jsonl",
                  original_filename="chats.jsonl", size_bytes=10, stats={"conversations": 3})
    session.add(row)
    session.commit()
    return row
