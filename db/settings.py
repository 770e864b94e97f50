"""Process settings, read from ``WORKBENCH_*`` environment variables, and safe data paths.

Every part of the workbench (web, worker, CLI) gets its configuration from `get_settings()`;
nothing else reads these variables. The environment is read on every call (it is cheap), so
tests can change a variable with ``monkeypatch.setenv`` and see it at once.

| Variable | Default | Meaning |
| --- | --- | --- |
| `WORKBENCH_DATA_DIR` | `./workbench-data` | Directory holding everything the workbench writes: uploaded datasets, tokenizers, runs (checkpoints) and, by default, the SQLite database. Made absolute against the working directory at start. |
| `WORKBENCH_DATABASE_URL` | `sqlite:///<data dir>/workbench.db` | SQLAlchemy URL of the database. `postgresql://…` and `postgres://…` are read as `postgresql+psycopg://…` (psycopg 3 is the driver we ship). |
| `WORKBENCH_BROKER_URL` | *(empty)* | Celery broker, e.g. `redis://localhost:6379/0`. Empty means `workbench serve` starts an embedded Redis server for itself. |
| `WORKBENCH_ADMIN_PASSWORD` | *(empty)* | Password for the `admin` account created on first start. Empty means a random one is generated and printed once. Ignored once an admin exists. |
| `WORKBENCH_MAX_UPLOAD_MB` | `200` | Largest dataset upload accepted, in megabytes (MiB). |
| `WORKBENCH_HEARTBEAT_SECONDS` | `5` | How often a worker stamps `jobs.heartbeat_at` on a running job. |
| `WORKBENCH_STALE_AFTER_SECONDS` | `60` | A running job whose heartbeat is older than this is taken as lost and requeued. Must be greater than the heartbeat interval. |
| `WORKBENCH_RESEND_AFTER_SECONDS` | `30` | A job queued this long that no worker has claimed and whose message is not waiting in the broker (lost with a restarted Redis) is sent again by the reaper. |
| `WORKBENCH_WORKER_QUEUES` | `default` | Comma-separated Celery queues a worker consumes, e.g. `gpu,default`. |
| `WORKBENCH_IMPORT_DIR` | `<data dir>/import` | The only directory from which an admin may import a Hugging Face GPT-2 model (Models tab): each sub-directory holding `config.json` + `model.safetensors` is offered; no other path on the server can be named. |
| `WORKBENCH_DEVICE` | `auto` | Torch device for jobs: `auto` (CUDA, then MPS, then CPU), `cpu`, `cuda`, `cuda:1`, `mps`. |
| `WORKBENCH_ALLOWED_ORIGINS` | *(empty)* | Comma-separated origins (`https://tools.example.com`) other than the app's own that browsers may send credentialed and state-changing requests from. Empty: same origin only. |
| `WORKBENCH_PUBLIC_HOSTS` | this machine's names and addresses, `localhost` | Comma-separated host names (or addresses) people type to reach the app. A browser page may change something only when its origin names one of them (and the port it was served on): a page of another domain that resolves to this machine (DNS rebinding) is refused. Add your proxy's public name here. |
| `WORKBENCH_BLIND_LABELERS` | `true` | Labelers are never told which model wrote an answer: model names are replaced by `model #<id>` (and where a model came from is left out) everywhere a labeler looks (Chat's model list, the Arena's leaderboard and its answer after a vote), as the Label screen never shows them. `false` tells labelers the names, as the training team is always told. |
| `WORKBENCH_THROUGHPUT_PROBES` | `true` | Workers (solo and threads pools) time a few training steps of the standard model shapes, and of shapes the Train forms ask about, while they have no job, and publish the timings with their presence: the forms' time estimates are then what the worker's device measured. `false` (the tests' setting) leaves estimates to a share of peak FLOP/s. |
| `WORKBENCH_SECURE_COOKIES` | `false` | `true` marks every cookie `Secure` (for a TLS proxy that does not send `X-Forwarded-Proto: https`; with that header, or on https, cookies are `Secure` anyway). |

Paths built from ids (``runs/<job id>``, ``datasets/<dataset id>``) go through `safe_join`,
which refuses anything that would land outside its base directory. File names a user supplies
never become paths at all (see DESIGN.md).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

DEFAULT_DATA_DIR = "./workbench-data"
DEFAULT_MAX_UPLOAD_MB = 200
DEFAULT_HEARTBEAT_SECONDS = 5.0
DEFAULT_STALE_AFTER_SECONDS = 60.0
DEFAULT_RESEND_AFTER_SECONDS = 30.0
DEFAULT_WORKER_QUEUES = ("default",)
DEFAULT_DEVICE = "auto"

# An origin as browsers send it: scheme://host[:port], nothing after.
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

# Celery queue names end up in Redis keys and command lines; keep them to a boring alphabet.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


class UnsafePathError(ValueError):
    """A path built from ids or user input would leave its base directory."""


@dataclass(frozen=True)
class Settings:
    """The workbench's configuration for one process; build it with `get_settings()`."""

    data_dir: Path
    database_url: str = field(repr=False)  # may carry a password
    broker_url: str = field(repr=False)  # may carry a password; "" = embedded Redis
    admin_password: str | None = field(repr=False)
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS
    resend_after_seconds: float = DEFAULT_RESEND_AFTER_SECONDS
    worker_queues: tuple[str, ...] = DEFAULT_WORKER_QUEUES
    device: str = DEFAULT_DEVICE
    import_dir: Path | None = None  # None: <data dir>/import
    allowed_origins: tuple[str, ...] = ()  # besides the app's own origin
    secure_cookies: bool = False  # True: Secure on every cookie, whatever the request's scheme
    blind_labelers: bool = True  # labelers are not told model names (web.services.access.sees_model_names)
    throughput_probes: bool = True  # workers time a few steps of standard shapes (worker.jobs.throughput)
    public_hosts: tuple[str, ...] = field(default_factory=lambda: default_public_hosts())

    @property
    def models_import_dir(self) -> Path:
        """Where admins put Hugging Face GPT-2 directories to import (WORKBENCH_IMPORT_DIR)."""
        return self.import_dir or self.data_dir / "import"

    @property
    def datasets_dir(self) -> Path:
        """Uploaded and prepared datasets: ``<data dir>/datasets/<dataset id>/``."""
        return self.data_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        """One directory per job: checkpoints, logs, exported models: ``<data dir>/runs/<job id>/``."""
        return self.data_dir / "runs"

    @property
    def tokenizers_dir(self) -> Path:
        """Trained tokenizers, looked up by name by ``llm.tokenizer.get_tokenizer``."""
        return self.data_dir / "tokenizers"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def uses_embedded_broker(self) -> bool:
        """True when no broker URL is set and `serve` must start its own Redis."""
        return not self.broker_url

    def ensure_directories(self) -> None:
        """Create the data directory and its standard subdirectories (idempotent)."""
        for directory in (self.data_dir, self.datasets_dir, self.runs_dir, self.tokenizers_dir):
            directory.mkdir(parents=True, exist_ok=True)


def normalize_database_url(url: str) -> str:
    """Point bare PostgreSQL URLs at psycopg 3, the driver we ship.

    ``postgresql://`` would make SQLAlchemy look for psycopg2 (not installed) and
    ``postgres://`` (Heroku, many docker examples) is not a dialect name at all.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
        # render_as_string keeps the password; str(URL) would mask it as ***.
        return parsed.render_as_string(hide_password=False)
    return url


def get_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``); raise ValueError on bad values."""
    env = os.environ if environ is None else environ

    def text(name: str) -> str:
        return env.get(name, "").strip()

    data_dir = Path(text("WORKBENCH_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()
    database_url = text("WORKBENCH_DATABASE_URL") or f"sqlite:///{data_dir / 'workbench.db'}"
    try:
        database_url = normalize_database_url(database_url)
    except Exception as error:  # sqlalchemy raises ArgumentError; say which variable is wrong
        raise ValueError(f"WORKBENCH_DATABASE_URL is not a database URL: {error}") from None

    heartbeat_seconds = _positive_number(env, "WORKBENCH_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS)
    stale_after_seconds = _positive_number(env, "WORKBENCH_STALE_AFTER_SECONDS", DEFAULT_STALE_AFTER_SECONDS)
    if stale_after_seconds <= heartbeat_seconds:
        # Otherwise the reaper would requeue jobs that are alive and well.
        raise ValueError(
            f"WORKBENCH_STALE_AFTER_SECONDS ({stale_after_seconds:g}) must be greater than "
            f"WORKBENCH_HEARTBEAT_SECONDS ({heartbeat_seconds:g})"
        )

    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=text("WORKBENCH_BROKER_URL"),
        admin_password=text("WORKBENCH_ADMIN_PASSWORD") or None,
        max_upload_mb=int(_positive_number(env, "WORKBENCH_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB, integer=True)),
        heartbeat_seconds=heartbeat_seconds,
        stale_after_seconds=stale_after_seconds,
        resend_after_seconds=_positive_number(env, "WORKBENCH_RESEND_AFTER_SECONDS", DEFAULT_RESEND_AFTER_SECONDS),
        worker_queues=_queue_names(text("WORKBENCH_WORKER_QUEUES")),
        device=text("WORKBENCH_DEVICE").lower() or DEFAULT_DEVICE,
        import_dir=Path(text("WORKBENCH_IMPORT_DIR")).expanduser().resolve() if text("WORKBENCH_IMPORT_DIR") else None,
        allowed_origins=_origins(text("WORKBENCH_ALLOWED_ORIGINS")),
        secure_cookies=_flag(env, "WORKBENCH_SECURE_COOKIES"),
        blind_labelers=_flag(env, "WORKBENCH_BLIND_LABELERS", default=True),
        throughput_probes=_flag(env, "WORKBENCH_THROUGHPUT_PROBES", default=True),
        public_hosts=_host_names(text("WORKBENCH_PUBLIC_HOSTS")) or default_public_hosts(),
    )


def safe_join(base: str | os.PathLike[str], *parts: str | int | os.PathLike[str]) -> Path:
    """Join ``parts`` onto ``base`` and return the resolved path, or raise `UnsafePathError`.

    Refuses absolute parts outright and any result that resolves outside ``base`` (``..``,
    or a symlink pointing elsewhere), so an id or name from a request can never reach files
    outside the data directory. ``base`` itself need not exist yet.
    """
    base_path = Path(base).resolve()
    pieces: list[str] = []
    for part in parts:
        piece = os.fspath(part) if not isinstance(part, int) else str(part)
        if "\x00" in piece:
            raise UnsafePathError(f"path part {piece!r} contains a NUL byte")
        if os.path.isabs(piece):
            raise UnsafePathError(f"path part {piece!r} is absolute; expected a path relative to {base_path}")
        pieces.append(piece)
    candidate = base_path.joinpath(*pieces).resolve()
    if not candidate.is_relative_to(base_path):
        raise UnsafePathError(f"path {'/'.join(pieces)!r} escapes {base_path}")
    return candidate


def _positive_number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {raw!r}") from None
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _queue_names(raw: str) -> tuple[str, ...]:
    if not raw:
        return DEFAULT_WORKER_QUEUES
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))  # ordered, unique
    if not names:
        raise ValueError(f"WORKBENCH_WORKER_QUEUES names no queue: {raw!r}")
    for name in names:
        if not _QUEUE_NAME.match(name):
            raise ValueError(f"WORKBENCH_WORKER_QUEUES: queue name {name!r} may use only letters, digits and _ . : -")
    return names


def _origins(raw: str) -> tuple[str, ...]:
    """WORKBENCH_ALLOWED_ORIGINS as normalized origins (lower case, no trailing slash)."""
    origins = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        origin = item.rstrip("/").lower()
        if not _ORIGIN.match(origin):
            raise ValueError(f"WORKBENCH_ALLOWED_ORIGINS: {item!r} is not an origin; "
                             "write scheme://host[:port], e.g. https://tools.example.com")
        origins.append(origin)
    return tuple(dict.fromkeys(origins))


@functools.lru_cache(maxsize=1)
def default_public_hosts() -> tuple[str, ...]:
    """The names a browser on this machine or its network may use: localhost, loopback addresses, this
    machine's host name, fully qualified name and addresses. Looked up once per process: `get_settings()` runs
    on every request, and `getfqdn` may wait on DNS."""
    import socket

    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    try:
        names += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:  # a host name that does not resolve: the names above still work
        pass
    return tuple(dict.fromkeys(name.lower() for name in names if name))


def _host_names(raw: str) -> tuple[str, ...]:
    """WORKBENCH_PUBLIC_HOSTS as lower-case host names (a port or a scheme given by mistake is refused)."""
    hosts = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        if not re.fullmatch(r"[a-z0-9.\-]+|\[?[0-9a-f:.]+\]?", item):
            raise ValueError(f"WORKBENCH_PUBLIC_HOSTS: {item!r} is not a host name; write names without scheme "
                             "or port, e.g. workbench.example.com,10.0.0.5")
        hosts.append(item.strip("[]"))
    return tuple(dict.fromkeys(hosts))


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be true or false, got {raw!r}")
