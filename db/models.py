"""The database schema: SQLAlchemy 2.x typed ORM models for every row the workbench keeps.

Users, datasets, jobs (and their metrics and log lines), models, and the preference loop's
prompts, completions and comparisons. The database is the source of truth for job state; a
queue message carries only a job id. Changes to this file need an Alembic migration
(`db/migrations/versions/`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from llm.preference_labels import Label


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps the offset (``timestamptz``); SQLite has no such type and would silently
    drop it, storing the wall-clock time of whatever zone the value came in and returning a
    naive datetime. That makes ``heartbeat_at < utcnow()`` raise ``TypeError`` on SQLite only,
    and makes stored values from different zones incomparable. So values are converted to UTC
    before they are stored (naive input is taken to be UTC already) and always come back aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Optional[datetime], dialect: Dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# Deterministic constraint names: Alembic batch mode on SQLite can only drop or alter a
# constraint it can name, and the migrations (which spell every name out) must agree with
# what `create_all` produces from these models.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Every id column is an SQL INTEGER: 32 bits signed on PostgreSQL. Requests bound ids by this
# (web/api/ids.py, web/schemas.py) so a larger number is a 422 naming the field, not a driver error.
SQL_INTEGER_MAX = 2**31 - 1
# How long a person may have taken over one label or vote (Comparison.time_spent_s), in seconds: at most a day.
# A tab left open overnight records a day (the tabs clamp to it); the REST schemas and the services refuse more.
MAX_TIME_SPENT_S = 86_400


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


def _enum(cls: type[enum.Enum]) -> Enum:
    # Store the enum's value (e.g. "queued"), not its Python name, as a plain string column:
    # readable in SQL and no database-specific ENUM type to migrate. The CHECK constraint makes
    # the database itself refuse other strings (raw SQL, other clients), not only the ORM;
    # name=None lets the naming convention call it ck_<table>_<column>. Adding a member later
    # therefore needs a migration that rewrites that CHECK.
    return Enum(cls, values_callable=lambda e: [m.value for m in e], native_enum=False,
                length=32, validate_strings=True, create_constraint=True, name=None)


class Role(str, enum.Enum):
    admin = "admin"        # everything, including user management
    trainer = "trainer"    # datasets, jobs, models, chat
    labeler = "labeler"    # labeling and chat only


class DatasetKind(str, enum.Enum):
    text = "text"              # pretraining corpus
    chat = "chat"              # conversations for SFT
    preference = "preference"  # prompt / chosen / rejected
    prompts = "prompts"        # prompts to generate candidates for
    benchmark = "benchmark"    # multiple-choice questions (question, choices, answer) to evaluate models on
    feedback = "feedback"      # single answers marked good or bad (prompt / completion / label): KTO's data
    raw = "raw"                # raw web data (HTML, WARC, JSONL with html/text) for the clean job (migration 0015)


# Each kind as the Datasets tab offers it (it lists DatasetKind, so a new kind shows there with its entry here):
# (what it is for, the files it takes, in Markdown).
DATASET_KIND_HELP = {
    DatasetKind.text: ("pretraining corpus", "txt documents separated by a blank line, jsonl with a `text` field, "
                       "csv / parquet with a `text` column; duplicate and empty documents are dropped and counted"),
    DatasetKind.chat: ("conversations for fine-tuning", "jsonl: OpenAI `messages`, ShareGPT `conversations`, "
                       "Alpaca `instruction`/`output`, or `prompt`/`completion`"),
    DatasetKind.preference: ("pairs for reward models and DPO", "jsonl: `prompt`/`chosen`/`rejected`, "
                             "`chosen`/`rejected`, or HH-RLHF transcripts"),
    DatasetKind.prompts: ("prompts to generate answers for", "txt one per line, or jsonl with a `prompt`"),
    DatasetKind.benchmark: ("multiple-choice questions to evaluate models on", "jsonl: `question`, `choices` (a list), "
                            "`answer` (the right choice's index), optional `context`"),
    DatasetKind.raw: ("raw web data to clean (Train ▸ Clean) into a text dataset", "html/htm (a page), warc or warc.gz, "
                      "jsonl or jsonl.gz with an `html` or `text` field (and an optional `url`), txt; cleaned FineWeb's "
                      "way: URL block list, HTML → text, language, quality rules, near-duplicates, PII"),
    DatasetKind.feedback: ("answers marked good or bad, for KTO", "jsonl (TRL's unpaired format): `prompt`, "
                           "`completion`, `label` (true: good, false: bad), as strings or message lists"),
}


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class ModelKind(str, enum.Enum):
    base = "base"
    sft = "sft"
    reward = "reward"
    dpo = "dpo"
    kto = "kto"    # a policy tuned on unpaired feedback (worker/kinds/kto); chats like sft and dpo models
    grpo = "grpo"  # a policy tuned by GRPO on its own scored answers (worker/kinds/grpo); chats like sft models


# The assistant models: they chat, enter the arena, get thumbs, and preference training (DPO, KTO, GRPO) continues
# from any of them. A new policy-training kind adds its ModelKind here and every one of those places takes it.
CHAT_MODEL_KINDS = (ModelKind.sft, ModelKind.dpo, ModelKind.kto, ModelKind.grpo)
# The models that write text: a base model or any chat model (generate, evaluate, and where tuning can start).
LANGUAGE_MODEL_KINDS = (ModelKind.base, *CHAT_MODEL_KINDS)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)  # cannot log in; their labels stay


class Dataset(Base):
    __tablename__ = "datasets"
    # One dataset per file and kind, whoever uploads it (two identical uploads at once: the second is told
    # the first's dataset). NULL for datasets stored before files were hashed, and NULLs never collide.
    __table_args__ = (Index("ix_datasets_content_sha256_kind", "content_sha256", "kind", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[DatasetKind] = mapped_column(_enum(DatasetKind))
    format: Mapped[str] = mapped_column(String(16))           # txt | jsonl | csv | parquet
    path: Mapped[str] = mapped_column(String(500))            # relative to the data directory
    original_filename: Mapped[str] = mapped_column(String(255))  # shown to people, never used as a path
    size_bytes: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    owner_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # SHA-256 of the stored file: the same file uploaded again is offered as the existing dataset.
    content_sha256: Mapped[Optional[str]] = mapped_column(String(64))

    owner: Mapped[Optional[User]] = relationship()


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind))
    tokenizer: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)  # GPTConfig as a dict
    path: Mapped[str] = mapped_column(String(500))                # run directory, relative to the data dir
    parent_model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id", use_alter=True))  # producing job
    owner_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Offered in the chat arena (admins take a model out of it; it stays usable everywhere else).
    in_arena: Mapped[bool] = mapped_column(Boolean, default=True)

    parent: Mapped[Optional["Model"]] = relationship(remote_side=[id])


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_priority", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # A plain string: the job layer's registry (worker.kinds.KINDS) says which kinds exist, so a new kind
    # needs no migration. Submitting checks it (worker.jobs.lifecycle); the database holds any name.
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(default=0)        # higher runs first
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[Optional[datetime]]
    finished_at: Mapped[Optional[datetime]]
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker_host: Mapped[Optional[str]] = mapped_column(String(255))
    heartbeat_at: Mapped[Optional[datetime]]
    attempts: Mapped[int] = mapped_column(default=0)        # how many times a worker started it
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    run_dir: Mapped[Optional[str]] = mapped_column(String(500))  # relative to the data dir
    dataset_id: Mapped[Optional[int]] = mapped_column(ForeignKey("datasets.id"))
    input_model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    output_model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    owner_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    name: Mapped[Optional[str]] = mapped_column(String(200))  # a label people give a job; None shows the kind
    # False when resuming cannot help (the kernel killed it for memory, its settings cannot work):
    # the UI then offers no Resume, only a new job with other settings.
    resumable: Mapped[bool] = mapped_column(Boolean, default=True)
    # Device slots (worker/jobs/devices.py): how many the job asks of one worker (its `devices` param, 1 for kinds
    # without one; a column so the claim filters in SQL), and which its latest claim gave it: CUDA devices as
    # CUDA_VISIBLE_DEVICES names them ("0", "1"), or CPU process slots ("cpu0"). None: claimed before 0011.
    devices: Mapped[int] = mapped_column(default=1)
    assigned_devices: Mapped[Optional[list[str]]] = mapped_column(JSON)

    dataset: Mapped[Optional[Dataset]] = relationship()
    input_model: Mapped[Optional[Model]] = relationship(foreign_keys=[input_model_id])
    output_model: Mapped[Optional[Model]] = relationship(foreign_keys=[output_model_id])
    owner: Mapped[Optional[User]] = relationship()


class JobEvent(Base):
    """Who changed a job's state and when: submitted, cancel requested, resumed, renamed, deleted by a
    person (user_id), or started, requeued, finished by the system (user_id None)."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[Optional[User]] = relationship()


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "name", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int]
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobLog(Base):
    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    line: Mapped[str] = mapped_column(Text)


class JobNode(Base):
    """One worker taking part in one attempt of a job that runs on several machines (`nodes` > 1, issue 20 item 4;
    worker/runtime/rendezvous.py). Node 0 is the worker that claimed the job: it hosts torchrun's c10d rendezvous
    and publishes its `endpoint` here; the others join by adding their row. A row's heartbeat says its worker
    still lives; (job, attempt, node_rank) is unique, so two workers never take the same place."""

    __tablename__ = "job_nodes"
    __table_args__ = (UniqueConstraint("job_id", "attempt", "node_rank"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    node_rank: Mapped[int]
    worker_host: Mapped[str] = mapped_column(String(255))  # `<Celery node name>:<pid>`, as Job.worker_host
    endpoint: Mapped[Optional[str]] = mapped_column(String(255))  # node 0's "host:port" of the rendezvous
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    left_at: Mapped[Optional[datetime]] = mapped_column()  # its torchrun exited (whatever the outcome)
    # A follower's device slots on its worker (migration 0016): held (`held_slots`) until it leaves. Node 0's are
    # the job's `assigned_devices`; None on node 0's row and on a follower of a worker that declared no slots.
    devices: Mapped[Optional[list[str]]] = mapped_column(JSON)


def prompt_key_sha256(text: str, messages: list[dict[str, Any]] | None) -> str:
    """What makes two prompts the same one: SHA-256 of the text and the conversation (canonical JSON).
    A hash, because a unique index cannot hold long texts (PostgreSQL's btree entries stop at ~2.7 KB)."""
    canonical = json.dumps([text, messages], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Prompt(Base):
    __tablename__ = "prompts"
    # A dataset's prompt is stored once, even when two generate jobs on a new dataset insert it at once.
    __table_args__ = (UniqueConstraint("dataset_id", "key_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    dataset_id: Mapped[Optional[int]] = mapped_column(ForeignKey("datasets.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The conversation so far when the prompt is a chat ([{role, content}, ...]); None: `text` is one user turn.
    messages: Mapped[Optional[list[dict[str, Any]]]] = mapped_column(JSON)
    # prompt_key_sha256(text, messages) for a dataset's prompts; None for prompts of no dataset (the arena's).
    key_sha256: Mapped[Optional[str]] = mapped_column(String(64))


class Completion(Base):
    __tablename__ = "completions"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id"))
    text: Mapped[str] = mapped_column(Text)
    sampling: Mapped[dict[str, Any]] = mapped_column(default=dict)  # temperature, top_k, top_p, max_new_tokens
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    seed: Mapped[Optional[int]] = mapped_column(Integer)  # with `sampling` and the model: regenerates it exactly
    token_count: Mapped[Optional[int]] = mapped_column(Integer)

    prompt: Mapped[Prompt] = relationship()


class LabelingProject(Base):
    """Pairs of candidate answers for people to compare: drawn from generate jobs, each wanted `overlap`
    times (by different labelers), with guidelines and who may label."""

    __tablename__ = "labeling_projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    guidelines: Mapped[str] = mapped_column(Text, default="")          # Markdown
    source_job_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    pairing: Mapped[str] = mapped_column(String(16), default="all")    # all | random
    pairs_per_prompt: Mapped[Optional[int]] = mapped_column(Integer)   # for "random"
    overlap: Mapped[int] = mapped_column(Integer, default=1)           # labels wanted per pair
    labeler_ids: Mapped[Optional[list[int]]] = mapped_column(JSON)     # None: every labeler
    owner_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The key of the opaque ids a labeler's screen gives the answers (web.services.labeling.answer_id): random
    # per project, never shown.
    answer_key: Mapped[str] = mapped_column(String(64), default=lambda: secrets.token_hex(32))
    # Who else may change it, see its agreement and export it with labelers' names (besides its owner and admins).
    co_owner_ids: Mapped[Optional[list[int]]] = mapped_column(JSON)


class LabelingPair(Base):
    """Two completions of one prompt in a project; `label_count` (non-skip labels) never exceeds the overlap."""

    __tablename__ = "labeling_pairs"
    __table_args__ = (
        UniqueConstraint("project_id", "completion_a_id", "completion_b_id"),
        Index("ix_labeling_pairs_queue", "project_id", "label_count", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("labeling_projects.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    completion_a_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))
    completion_b_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))
    label_count: Mapped[int] = mapped_column(Integer, default=0)


class LabelingAssignment(Base):
    """A pair handed to a labeler and not yet labeled: it holds one of the pair's overlap slots until it
    expires (so two labelers at once are not both given a pair's last slot), and fixes which completion
    that labeler sees on the left."""

    __tablename__ = "labeling_assignments"
    __table_args__ = (UniqueConstraint("pair_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("labeling_pairs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    swapped: Mapped[bool] = mapped_column(Boolean, default=False)  # completion_b shown on the left
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Comparison(Base):
    __tablename__ = "comparisons"
    __table_args__ = (
        # A completion compared with itself is no preference at all.
        CheckConstraint("completion_a_id <> completion_b_id", name="ck_comparisons_distinct_completions"),
        # One label per labeler per pair: a double click or a retried request stores one row.
        UniqueConstraint("pair_id", "annotator_id"),
        # Ids are never reused (SQLite would give a removed newest label's id to the next one): a label's id, as
        # an idempotent retry or an undo answers it, names that label or none.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    completion_a_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))
    completion_b_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))
    label: Mapped[Label] = mapped_column(_enum(Label))
    annotator_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), index=True)  # per-annotator progress
    source: Mapped[str] = mapped_column(String(16), default="label")  # label | upload | arena
    time_spent_s: Mapped[Optional[float]] = mapped_column(Float)  # 0 to MAX_TIME_SPENT_S
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pair_id: Mapped[Optional[int]] = mapped_column(ForeignKey("labeling_pairs.id", ondelete="CASCADE"), index=True)
    # True when completion_b was shown on the left (per labeler, random): the label is stored un-swapped.
    swapped: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[Optional[str]] = mapped_column(Text)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(64), unique=True)


class UndoneLabelKey(Base):
    """The idempotency key of a label that was undone: a late retry of the request that stored it (a network
    retry arriving after the undo) must not store the label again, and the key is no longer on any label to
    tell it so. Kept for good; a key is at most 64 characters."""

    __tablename__ = "undone_label_keys"

    idempotency_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    undone_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArenaBattle(Base):
    """Two anonymous answers the arena showed one person: the one thing their vote may name, once (the vote's
    comparison), and the one way to learn which models wrote them, after that vote. Ids are never reused
    (SQLite AUTOINCREMENT): a battle id someone kept names that battle or none."""

    __tablename__ = "arena_battles"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)  # whom it was shown to
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    left_completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))   # shown as model A
    right_completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))  # shown as model B
    comparison_id: Mapped[Optional[int]] = mapped_column(ForeignKey("comparisons.id"), unique=True)  # the vote
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def answer_key_sha256(model_id: int | None, messages: list[dict[str, Any]], answer: str) -> str:
    """What makes two thumbs about the same answer: SHA-256 of the model, the conversation it answered and the
    answer (canonical JSON). A person's thumb on an answer is one row, changed or taken back, never two."""
    canonical = json.dumps([model_id, messages, answer], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class AnswerFeedback(Base):
    """A thumb up (label True: a good answer) or down on one answer a model gave in the Chat tab: unpaired
    feedback that KTO trains on (worker/kinds/kto). One per (user, answer): giving it again changes it, undo
    deletes it. Ids are never reused (SQLite AUTOINCREMENT), so a job's record of the rows it used stays true."""

    __tablename__ = "answer_feedback"
    __table_args__ = (UniqueConstraint("user_id", "answer_sha256"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), index=True)
    # The conversation the model answered ([{role, content}], ending with the user's turn) and its answer.
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    answer: Mapped[str] = mapped_column(Text)
    label: Mapped[bool] = mapped_column(Boolean)  # True: thumbs up
    answer_sha256: Mapped[str] = mapped_column(String(64))  # answer_key_sha256(model_id, messages, answer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
