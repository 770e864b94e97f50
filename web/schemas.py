"""Pydantic models of the REST API's request and response bodies (they also make the OpenAPI page).

Responses are built from the plain dicts `web.services` returns, so these models describe the
same fields the UI sees. Job parameters stay a free-form object here: each job kind has its own
(the CLI flag names with underscores, e.g. `max_steps`), and `worker.jobs.lifecycle.create_job` is the one
place that validates them, answering with the name of the wrong field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from db.models import MAX_TIME_SPENT_S, SQL_INTEGER_MAX, DatasetKind, JobStatus, ModelKind
from llm.preference_labels import VOTES, Choice, Label

RowId = Annotated[int, Field(ge=1, le=SQL_INTEGER_MAX)]  # a row's id in a request body
TimeSpent = Annotated[float, Field(ge=0, le=MAX_TIME_SPENT_S, description="seconds the person took, at most a day")]


class ErrorOut(BaseModel):
    """Every 4xx answer: `detail` says what is wrong (for 422, a list naming the fields)."""

    detail: Any = Field(examples=["job 42 does not exist"])


class SeenWorkerOut(BaseModel):
    node: str | None = Field(default=None, description="Celery node name, workbench-<pid>@<host>")
    host: str | None = None
    pid: int | None = None
    started_at: str | None = None
    last_heartbeat: str = Field(description="ISO time of its last presence beat")
    seconds_since: float
    alive: bool = Field(description="beat within WORKBENCH_STALE_AFTER_SECONDS")
    capacity: dict | None = Field(default=None, examples=[{"ram_bytes": 25769803776, "gpu_memory_bytes": []}],
                                  description="what its machine has for a job (total RAM, memory per visible GPU); "
                                              "the submit-time fit check compares estimates with the largest")
    devices: list[str] | None = Field(default=None, examples=[["0", "1"]],
                                      description="its device slots: GPUs as CUDA_VISIBLE_DEVICES names them, or "
                                                  "CPU process slots cpu0, cpu1, ...")
    device_jobs: dict[str, int | None] | None = Field(default=None, examples=[{"0": 12, "1": None}],
                                                      description="each slot: the id of the running job holding it, "
                                                                  "null when free")


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"], description="ok, or error when any part below is down (HTTP 503)")
    database: str | None = Field(default=None, examples=["ok"], description="the parts are shown to admins only")
    broker: str | None = Field(default=None, examples=["ok"], description="ok, or why PING failed")
    workers: str | None = Field(default=None, examples=["ok"],
                                description="ok | none seen (no worker has beaten yet: jobs wait) | down: why")
    seen_workers: list[SeenWorkerOut] | None = None
    processes: dict[str, str] | None = Field(default=None,
                                      description="what `workbench serve` supervises (worker, redis) and its state")


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
    already_stored: bool = Field(False, description="upload only: true when this exact file (same SHA-256, same "
                                                    "kind) was already a dataset, which is the one returned")
    note: str = Field("", description="upload only: stored as text, but the file looks like another kind (e.g. chat "
                                      "lines in a .txt): which kind, and how to upload it as that kind")


class JobSubmit(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "kind": "pretrain",
        "params": {"dataset_id": 1, "tokenizer": "gpt2", "preset": "tiny", "max_steps": 200,
                   "batch_size": 8, "block_size": 128, "lr": 0.001, "seed": 0, "device": "auto"},
        "priority": 0,
    }]})

    kind: str = Field(description="a kind of GET /api/job-kinds: pretrain, sft, evaluate, ...")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the CLI flags of the job, with underscores "
                                               "(dataset_id, tokenizer, preset, max_steps, batch_size, ...)")
    priority: int = Field(0, ge=-100, le=100, description="higher runs first")


class JobOut(BaseModel):
    id: int
    name: str | None = Field(None, description="a label people give the job; none: show the kind")
    kind: str
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
    resumable: bool = Field(True, description="false when resuming cannot help (e.g. killed for memory)")
    devices: int = Field(1, description="device slots the job asks of one worker (its devices param)")
    assigned_devices: list[str] | None = Field(None, description="the slots its latest claim gave it (GPUs or cpuN)")
    dataset_id: int | None
    input_model_id: int | None
    output_model_id: int | None
    owner_id: int | None
    owner: str | None = Field(description="the owner's user name")


class JobDetailOut(JobOut):
    metrics: dict[str, float] = Field(description="latest value of each metric, e.g. loss, val_loss, tokens_per_s")
    metric_steps: dict[str, int] = Field(description="the step each latest value was recorded at")
    events: list[JobEventOut] = Field(default_factory=list, description="who changed the job and when, oldest first")
    estimate: dict[str, Any] | None = Field(None, description="the time estimated at submit: {seconds, source} "
                                                              "(measured, fitted or assumed); compare with "
                                                              "finished_at - started_at")


class JobEventOut(BaseModel):
    action: str = Field(description="submitted, cancelled, cancel_requested, resumed, renamed, requeued, ...")
    user: str | None = Field(description="who did it; null: the system")
    at: datetime
    detail: str | None


class NameChange(BaseModel):
    """PATCH body for a job or a model."""
    name: str | None = Field(max_length=200, description="the new name (a job: blank clears it, the kind shows)")


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


class ModelImport(BaseModel):
    directory: str = Field(description="name of a sub-directory of the import directory (GET /api/models/importable)")
    name: str | None = Field(None, description="display name; default: the directory's name")


class JobKindOut(BaseModel):
    kind: str
    title: str
    description: str
    params: dict[str, dict[str, Any]] = Field(
        description="each parameter: type, default, help, minimum, maximum, choices, required")
    dataset_kinds: list[DatasetKind]
    model_kinds: list[ModelKind]
    produces: ModelKind | None


class PretrainEstimateOut(BaseModel):
    params_count: int = Field(description="parameters without position embeddings")
    params_total: int
    tokens_per_step: int
    total_tokens: int
    flops_per_token: float
    est_seconds: float = Field(description="training steps and evaluations (not the job's start or tokenizing)")
    step_seconds: float = Field(description="one micro-batch's training step on the worker's device")
    time_source: str = Field(description="measured (a worker probed this shape), fitted (from a worker's probes "
                                         "of other shapes) or assumed (no worker has probed: a share of peak)")
    time_basis: str = Field(description="time_source in words")
    head_share: float = Field(description="the vocabulary head's share of a training step's FLOPs")
    fitting_vocab: int | None = Field(None, description="a vocabulary that fits the model, when the head is most "
                                                        "of the work")
    tokenizer_advice: str | None = None
    device: str
    config: dict[str, Any]


# ----------------------------------------------------------------------------- labeling

class LabelingProjectCreate(BaseModel):
    name: str = Field(examples=["helpfulness round 1"])
    source_job_ids: list[int] = Field(description="finished generate jobs whose answers are paired")
    pairing: str = Field("all", description="all: every two answers of a prompt; random: pairs_per_prompt of them")
    pairs_per_prompt: int | None = None
    overlap: int = Field(1, description="labels wanted per pair, each from a different labeler")
    guidelines: str = Field("", description="Markdown shown to labelers (at most 64 KB)")
    labeler_ids: list[int] | None = Field(None, description="who may label; null: everyone with the labeler role")
    co_owner_ids: list[int] | None = Field(None, description="trainers or admins who may change the project, see its "
                                                             "agreement and export it with labelers' names, "
                                                             "besides you (its owner) and admins")
    seed: int = 0


class LabelingProjectSummaryOut(BaseModel):
    """A project as a list shows it: without its guidelines (GET the project for them)."""

    id: int
    name: str
    source_job_ids: list[int]
    pairing: str
    pairs_per_prompt: int | None
    overlap: int
    labeler_ids: list[int] | None
    owner_id: int | None = Field(description="who created it; null: made by the system")
    co_owner_ids: list[int]
    created_at: datetime
    pairs: int
    complete_pairs: int
    labels: int


class LabelingProjectOut(LabelingProjectSummaryOut):
    guidelines: str = Field(description="Markdown shown to labelers (at most 64 KB)")


class CoOwnersUpdate(BaseModel):
    co_owner_ids: list[RowId] = Field(max_length=1000, description="the project's co-owners (every other leaves)")


class GuidelinesUpdate(BaseModel):
    guidelines: str


class LabelingProgressOut(BaseModel):
    done: int = Field(description="pairs this labeler labeled or skipped")
    skipped: int = Field(description="the skips among them (not counted as labeled)")
    today: int
    left: int = Field(description="pairs still open to this labeler")
    pairs: int
    complete_pairs: int


class ShownAnswer(BaseModel):
    answer_id: str = Field(description="this answer's id on this pair's screen: opaque (not the completion's "
                                       "database id); send the left one's back as left_answer_id")
    text: str


class PairOut(BaseModel):
    """A pair as one labeler sees it: left and right are randomised per labeler."""

    pair_id: int
    project_id: int
    prompt: dict[str, Any] = Field(description="{text, messages}: the conversation so far")
    left: ShownAnswer
    right: ShownAnswer
    progress: LabelingProgressOut


class UndoOut(PairOut):
    """The pair whose label was undone, to label again."""

    undone: int = Field(description="the id of the label removed (label ids are never given to another label)")


class LabelSubmit(BaseModel):
    pair_id: int = Field(ge=1, le=SQL_INTEGER_MAX)
    choice: Choice = Field(description="what the labeler chose, as seen on screen")
    left_answer_id: str = Field(min_length=1, max_length=64,
                                description="the answer_id of the answer shown on the left")
    note: str | None = None
    time_spent_s: TimeSpent | None = None
    idempotency_key: str | None = Field(None, description="repeat a request with the same key: one label stored")


class LabelOut(BaseModel):
    id: int
    pair_id: int | None
    label: Label = Field(description="stored un-swapped: a means completion_a is better")
    swapped: bool
    note: str | None
    annotator_id: int | None
    created_at: datetime
    duplicate: bool = Field(description="true when this request repeated one already stored")
    progress: LabelingProgressOut
    next: PairOut | None = Field(None, description="with ?next=true: the labeler's next pair (null when nothing "
                                                    "is left); absent otherwise")


class AgreementOut(BaseModel):
    project_id: int
    labels: int
    labelers: dict[str, int]
    percent_agreement: float | None
    alpha: float | None = Field(description="Krippendorff's alpha, nominal; null while undefined")
    alpha_reading: str
    kappas: list[dict[str, Any]]
    against_majority: list[dict[str, Any]]
    disagreements: list[dict[str, Any]]
    consensus: dict[str, int]
    min_labels: int


# ----------------------------------------------------------------------------- users (admins)

class UserOut(BaseModel):
    id: int
    name: str
    role: str = Field(description="admin | trainer | labeler")
    disabled: bool = Field(description="a disabled user cannot log in; their labels stay")
    created_at: datetime


class UserCreate(BaseModel):
    name: str = Field(examples=["alice"], description="1 to 64 letters, digits, '_', '.' or '-'")
    role: str = Field(examples=["labeler"], description="admin | trainer | labeler")
    password: str | None = Field(None, description="at least 8 characters; leave out to get a generated one")


class UserUpdate(BaseModel):
    role: str | None = Field(None, description="admin | trainer | labeler")
    disabled: bool | None = Field(None, description="true: cannot log in any more; false: enabled again")


class PasswordReset(BaseModel):
    password: str | None = Field(None, description="the new password; leave out to get a generated one")


class UserWithPasswordOut(UserOut):
    generated_password: str | None = Field(
        description="the generated password, shown this once (stored only as a hash); null when one was given")


# ----------------------------------------------------------------------------- arena

class ArenaModelOut(BaseModel):
    id: int
    name: str
    kind: str
    in_arena: bool = Field(description="whether battles drawn at random may pick this model")


class ArenaPoolChange(BaseModel):
    model_ids: list[RowId] = Field(
        max_length=10_000, description="the chat models the arena draws from; every other chat model leaves it")


class BattleCreate(BaseModel):
    messages: list[dict[str, Any]] = Field(description="the conversation so far, ending with the user's turn")
    model_ids: list[RowId] | None = Field(None, max_length=1000,
                                          description="the models to draw two from; default: the arena's pool")
    max_new_tokens: int = Field(128, ge=1, le=1024)
    temperature: float = Field(0.8, ge=0, le=5)
    seed: int | None = Field(None, ge=0, le=SQL_INTEGER_MAX)


class BattleAnswer(BaseModel):
    text: str


class BattleOut(BaseModel):
    """Two anonymous answers; which model wrote which is told only by the vote on this battle."""

    battle_id: int = Field(description="what the vote names (POST /api/arena/votes); yours only, one vote")
    left: BattleAnswer
    right: BattleAnswer


ArenaVote = Literal[tuple(choice.value for choice in VOTES)]  # FastChat's vote types: a skip is no vote


class VoteCreate(BaseModel):
    battle_id: RowId = Field(description="a battle the arena showed you (POST /api/arena/battles)")
    choice: ArenaVote = Field(description="the better answer as seen (left is model A), or neither")
    time_spent_s: TimeSpent | None = None


class VoteOut(BaseModel):
    battle_id: int
    comparison_id: int
    label: Label
    duplicate: bool = Field(description="true when the battle had its vote already: this is that vote")
    left_model: dict[str, Any] | None = Field(description="{id, name} of model A; null for a blind labeler")
    right_model: dict[str, Any] | None = Field(description="{id, name} of model B; null for a blind labeler")


class LeaderboardRow(BaseModel):
    model_id: int
    name: str
    kind: str | None
    rating: float = Field(description="Bradley-Terry strength on the Elo scale (mean 1000)")
    lower: float | None = Field(description="95 % bootstrap interval")
    upper: float | None
    votes: int


class ChatMessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class FeedbackGive(BaseModel):
    model_id: RowId = Field(description="the chat model that wrote the answer")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=200,
                                          description="the conversation it answered, ending with the user's turn")
    answer: str = Field(min_length=1, max_length=100_000, description="the model's answer")
    label: bool = Field(strict=True, description="true: thumbs up (a good answer), false: thumbs down")


class FeedbackOut(BaseModel):
    id: int
    label: bool
    created: bool = Field(description="false when you had a thumb on this answer already (changed, or the same)")
    changed: bool = Field(description="true when this turned your earlier thumb the other way")


class FeedbackRow(BaseModel):
    id: int
    user_id: int
    model_id: int | None = Field(description="null once the model is deleted: the thumb stays")
    messages: list[dict[str, Any]]
    answer: str
    label: bool
    created_at: datetime
    updated_at: datetime


class FeedbackUndone(BaseModel):
    id: int
    undone: bool
