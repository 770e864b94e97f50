"""The `generate` kind's handler: K candidate answers per prompt of a prompts dataset, for people to compare.

One or two models answer (model B may be model A again with another temperature); the K answers of a
prompt are split between them (A gets the larger half). Each model's share comes from one shared prefill
(`llm.candidates`). Every answer becomes a Completion row with its model, sampling settings, batch seed
and token count, enough to regenerate it exactly (`llm.candidates.regenerate`). Each distinct prompt of
the dataset is one Prompt row, shared by every generate job over that dataset.

Nothing is lost or doubled by an interruption: a prompt's K completions, the job's progress and its
metrics are one transaction, fenced by the attempt number (a worker presumed dead writes nothing). A
resumed or requeued job skips the prompts that already have their completions, and the seeds depend
only on the job's seed and the prompt's place in the dataset, so a resumed job writes what an
uninterrupted one would have. Cancel is checked between prompts.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Completion, Job, JobStatus, Metric, Model, Prompt, prompt_key_sha256
from db.session import with_retries
from worker.jobs.context import PROGRESS_LOG_INTERVAL_S, JobContext, Outcome, dataset_path, stored_path


@dataclass(frozen=True)
class Slot:
    """One model's share of every prompt's answers."""

    index: int          # 0 = model A, 1 = model B (part of each batch's seed)
    model_id: int
    count: int          # answers per prompt from this model
    temperature: float


def slots(params: dict[str, Any]) -> list[Slot]:
    """Model A alone takes all K answers; with model B, A takes ceil(K/2) and B the rest."""
    k = params["k"]
    if params.get("model_id_b") is None:
        return [Slot(0, params["model_id"], k, params["temperature"])]
    return [Slot(0, params["model_id"], math.ceil(k / 2), params["temperature"]),
            Slot(1, params["model_id_b"], k // 2, params.get("temperature_b", params["temperature"]))]


def greedy(temperature: float, params: dict[str, Any]) -> bool:
    """Whether these sampling settings always write the same answer."""
    return temperature == 0 or params.get("top_k") == 1


# ----------------------------------------------------------------------------- prompts

def prompt_fields(conversation: list[dict]) -> tuple[str, list[dict] | None]:
    """(Prompt.text, Prompt.messages): the last user turn, and the conversation unless it is only that turn."""
    text = conversation[-1]["content"]
    return text, (None if len(conversation) == 1 else conversation)


def prompt_rows(session: Session, dataset_id: int, conversations: list[list[dict]]) -> list[int]:
    """The Prompt id of each conversation (distinct ones), made once per dataset and reused by later jobs.

    Insert-or-get: the missing prompts are inserted with ON CONFLICT DO NOTHING on the unique
    (dataset_id, key_sha256), so two jobs that start on a new dataset at once store each prompt once and
    both read the same ids back.
    """
    def existing() -> dict[str, int]:
        rows = session.execute(select(Prompt.key_sha256, Prompt.id).where(Prompt.dataset_id == dataset_id,
                                                                          Prompt.key_sha256.is_not(None)))
        return dict(rows.all())

    fields = [prompt_fields(conversation) for conversation in conversations]
    keys = [prompt_key_sha256(text, messages) for text, messages in fields]
    known = existing()
    missing = {key: {"text": text, "messages": messages, "dataset_id": dataset_id, "key_sha256": key}
               for key, (text, messages) in zip(keys, fields) if key not in known}
    if missing:
        session.execute(_insert_ignoring_duplicates(session, Prompt, ["dataset_id", "key_sha256"]),
                        list(missing.values()))
        session.commit()
        known = existing()
    session.commit()  # no read transaction held while generating
    return [known[key] for key in keys]


def _insert_ignoring_duplicates(session: Session, model: type, unique_columns: list[str]):
    """INSERT ... ON CONFLICT (unique_columns) DO NOTHING, in the database's own dialect."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model).on_conflict_do_nothing(index_elements=unique_columns)


def _distinct(conversations: list[list[dict]]) -> list[list[dict]]:
    seen, result = set(), []
    for conversation in conversations:
        key = json.dumps(conversation, sort_keys=True)
        if key not in seen:
            seen.add(key)
            result.append(conversation)
    return result


def _prompts_done(session: Session, job_id: int, k: int) -> set[int]:
    rows = session.execute(select(Completion.prompt_id, func.count()).where(Completion.job_id == job_id)
                           .group_by(Completion.prompt_id))
    done = {prompt_id for prompt_id, count in rows if count >= k}
    session.commit()
    return done


# ----------------------------------------------------------------------------- the run

def _commit_prompt(ctx: JobContext, prompt_id: int, answers: list[tuple[Slot, Any]], step: int,
                   values: dict[str, float], progress: float) -> bool:
    """One prompt's completions, the progress and the metrics, in one transaction fenced by the attempt.

    False (and nothing written) when the job is no longer this attempt's to write."""

    session = ctx.session

    def write() -> bool:
        owned = session.execute(update(Job).where(Job.id == ctx.job_id, Job.attempts == ctx.attempt,
                                                  Job.status == JobStatus.running)
                                .values(progress=progress)).rowcount
        if not owned:
            session.rollback()
            return False
        session.add_all(Completion(prompt_id=prompt_id, model_id=slot.model_id, job_id=ctx.job_id,
                                   text=candidate.text, sampling=candidate.sampling, seed=candidate.seed,
                                   token_count=candidate.token_count) for slot, candidate in answers)
        session.add_all(Metric(job_id=ctx.job_id, step=step, name=name, value=value) for name, value in values.items())
        session.commit()
        return True

    try:
        return with_retries(write, session)
    except Exception:
        session.rollback()
        raise


def run(ctx: JobContext) -> Outcome:
    from llm.candidates import candidates, prompt_seed
    from llm.chat_data import read_prompts
    from llm.checkpoint import load_model
    from llm.device import pick_device
    from llm.generate import SamplingSettings

    params, session = ctx.params, ctx.session
    conversations = read_prompts(dataset_path(ctx), ctx.dataset.original_filename)
    distinct = _distinct(conversations)
    prompt_ids = prompt_rows(session, ctx.dataset.id, distinct)
    done = _prompts_done(session, ctx.job_id, params["k"])
    total = len(distinct)
    summary = f"{total * params['k']:,} completions for {total:,} prompts"
    duplicates = len(conversations) - total
    ctx.log(f"{total:,} prompts in dataset {ctx.dataset.id}" + (f" ({duplicates:,} repeated ones answered once)"
                                                                if duplicates else "")
            + (f"; {len(done):,} already answered by an earlier attempt" if done else ""))
    if len(done) == total:
        return Outcome(summary=summary)

    device = pick_device(ctx.settings.device)
    shares = slots(params)
    loaded: dict[int, tuple[Any, Any]] = {}
    for slot in shares:
        if slot.model_id not in loaded:
            row = ctx.input_model if slot.model_id == ctx.input_model.id else session.get(Model, slot.model_id)
            loaded[slot.model_id] = load_model(stored_path(ctx, row, "model"), device, data_dir=ctx.data_dir)
            ctx.log(f"model {'AB'[slot.index]}: {row.id} ({row.name!r}), {slot.count} answers per prompt at "
                    f"temperature {slot.temperature:g}")
    session.commit()

    answered, tokens, seconds, last_log = len(done), 0, 0.0, time.monotonic()
    for position, (conversation, prompt_id) in enumerate(zip(distinct, prompt_ids)):
        if prompt_id in done:
            continue
        if ctx.should_stop():
            return Outcome(stopped=True, summary=f"stopped after {answered:,} of {total:,} prompts")
        started, answers = time.perf_counter(), []
        for slot in shares:
            model, tokenizer = loaded[slot.model_id]
            settings = SamplingSettings(max_new_tokens=params["max_new_tokens"], temperature=slot.temperature,
                                        top_k=params.get("top_k"), top_p=params.get("top_p"))
            batch = candidates(model, tokenizer, conversation, settings,
                               prompt_seed(params["seed"], position, slot.index), slot.count)
            answers += [(slot, candidate) for candidate in batch]
        seconds += time.perf_counter() - started
        tokens += sum(candidate.token_count for _, candidate in answers)
        done.add(prompt_id)
        answered += 1
        values = {"prompts_done": answered, "completions": answered * params["k"],
                  "tokens_per_s": tokens / seconds if seconds > 0 else 0.0}
        if not _commit_prompt(ctx, prompt_id, answers, answered, values, answered / total):
            return Outcome(stopped=True, summary=f"this attempt no longer owns the job; left at prompt {answered:,}")
        if time.monotonic() - last_log >= PROGRESS_LOG_INTERVAL_S or answered == total:
            last_log = time.monotonic()
            ctx.log(f"{answered:,} of {total:,} prompts answered ({values['tokens_per_s']:.0f} tokens/s)")
    return Outcome(summary=summary)

