"""Pydantic models of the REST API's request and response bodies (they also make the OpenAPI page).

Responses are built from the plain dicts `web.services` returns, so these models describe the
same fields the UI sees. Job parameters stay a free-form object here: each job kind has its own
(the CLI flag names with underscores, e.g. `max_steps`), and `worker.jobs.create_job` is the one
place that validates them, answering with the name of the wrong field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from db.models import DatasetKind, JobKind, JobStatus, ModelKind


class ErrorOut(BaseModel):
    """Every 4xx answer: `detail` says what is wrong (for 422, a list naming the fields)."""

    detail: Any = Field(examples=["job 42 does not exist"])


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"])
    database: str = Field(examples=["ok"])


class DatasetOut(BaseModel):
    id: int
    name: str
    kind: DatasetKind
    format: str = Field(description="txt | jsonl | csv | parquet")
    original_filename: str = Field(description="the uploaded file's name, for display only")
    size_bytes: int
    stats: dict[str, Any] = Field(
        description="for text corpora: documents, bytes, empty/duplicates/undecodable removed, "
                    "preview, length_histogram {edges, counts, min, median, mean, max}")
    owner_id: int | None
    created_at: datetime


class JobSubmit(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "kind": "pretrain",
        "params": {"dataset_id": 1, "tokenizer": "gpt2", "preset": "tiny", "max_steps": 200,
                   "batch_size": 8, "block_size": 128, "lr": 0.001, "seed": 0, "device": "auto"},
        "priority": 0,
    }]})

    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the CLI flags of the job, with underscores "
                                               "(dataset_id, tokenizer, preset, max_steps, batch_size, ...)")
    priority: int = Field(0, ge=-100, le=100, description="higher runs first")


class JobOut(BaseModel):
    id: int
    kind: JobKind
    status: JobStatus
    priority: int
    progress: float = Field(description="0..1")
    params: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    error: str | None
    worker_host: str | None
    attempts: int
    cancel_requested: bool
    dataset_id: int | None
    input_model_id: int | None
    output_model_id: int | None
    owner_id: int | None
    owner: str | None = Field(description="the owner's user name")


class JobDetailOut(JobOut):
    metrics: dict[str, float] = Field(description="latest value of each metric, e.g. loss, val_loss, tokens_per_s")
    metric_steps: dict[str, int] = Field(description="the step each latest value was recorded at")


class MetricOut(BaseModel):
    step: int
    name: str
    value: float


class LogLineOut(BaseModel):
    id: int = Field(description="pass the last id as after_id to fetch only newer lines")
    created_at: datetime
    line: str


class ModelOut(BaseModel):
    id: int
    name: str
    kind: ModelKind
    tokenizer: str
    parent_model_id: int | None
    job_id: int | None
    config: dict[str, Any]
    owner_id: int | None
    created_at: datetime


class PretrainEstimateOut(BaseModel):
    params_count: int = Field(description="parameters without position embeddings")
    params_total: int
    tokens_per_step: int
    total_tokens: int
    flops_per_token: float
    est_seconds: float = Field(description="rough: FLOPs / (peak FLOP/s x assumed utilisation)")
    device: str
    peak_flops: float
    utilisation: float
    config: dict[str, Any]
