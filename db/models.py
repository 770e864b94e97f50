"""The database schema: SQLAlchemy 2.x typed ORM models for every row the workbench keeps.

Users, datasets, jobs (and their metrics and log lines), models, and the preference loop's
prompts, completions and comparisons. The database is the source of truth for job state; a
queue message carries only a job id. Changes to this file need an Alembic migration
(`db/migrations/versions/`).
"""

from __future__ import annotations

import enum
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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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


class JobKind(str, enum.Enum):
    prepare = "prepare"
    train_tokenizer = "train_tokenizer"
    pretrain = "pretrain"
    sft = "sft"
    generate = "generate"
    reward = "reward"
    dpo = "dpo"
    evaluate = "evaluate"


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


class Label(str, enum.Enum):
    a = "a"
    b = "b"
    tie = "tie"
    both_bad = "both_bad"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"

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

    parent: Mapped[Optional["Model"]] = relationship(remote_side=[id])


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_priority", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
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

    dataset: Mapped[Optional[Dataset]] = relationship()
    input_model: Mapped[Optional[Model]] = relationship(foreign_keys=[input_model_id])
    output_model: Mapped[Optional[Model]] = relationship(foreign_keys=[output_model_id])
    owner: Mapped[Optional[User]] = relationship()


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


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    dataset_id: Mapped[Optional[int]] = mapped_column(ForeignKey("datasets.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Completion(Base):
    __tablename__ = "completions"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    job_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id"))
    text: Mapped[str] = mapped_column(Text)
    sampling: Mapped[dict[str, Any]] = mapped_column(default=dict)  # temperature, top_k, top_p, seed, ...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prompt: Mapped[Prompt] = relationship()


class Comparison(Base):
    __tablename__ = "comparisons"
    __table_args__ = (
        # A completion compared with itself is no preference at all.
        CheckConstraint("completion_a_id <> completion_b_id", name="ck_comparisons_distinct_completions"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    completion_a_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))
    completion_b_id: Mapped[int] = mapped_column(ForeignKey("completions.id"))
    label: Mapped[Label] = mapped_column(_enum(Label))
    annotator_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), index=True)  # per-annotator progress
    source: Mapped[str] = mapped_column(String(16), default="label")  # label | arena
    time_spent_s: Mapped[Optional[float]] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
