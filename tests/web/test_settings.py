"""Settings from WORKBENCH_* environment variables, and `safe_join`'s refusal to leave its base."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from db.settings import Settings, UnsafePathError, get_settings, normalize_database_url, safe_join


def test_defaults_resolve_against_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = get_settings(environ={})
    data_dir = tmp_path.resolve() / "workbench-data"
    assert settings.data_dir == data_dir and settings.data_dir.is_absolute()
    assert settings.database_url == f"sqlite:///{data_dir}/workbench.db"
    assert settings.broker_url == "" and settings.uses_embedded_broker
    assert settings.admin_password is None
    assert settings.max_upload_mb == 200 and settings.max_upload_bytes == 200 * 1024 * 1024
    assert settings.heartbeat_seconds == 5 and settings.stale_after_seconds == 60
    assert settings.worker_queues == ("default",)
    assert settings.device == "auto"
    assert (settings.datasets_dir, settings.runs_dir, settings.tokenizers_dir) == (
        data_dir / "datasets", data_dir / "runs", data_dir / "tokenizers",
    )
    assert not data_dir.exists(), "reading settings must not create directories"


def test_every_variable_is_read(tmp_path: Path) -> None:
    settings = get_settings(environ={
        "WORKBENCH_DATA_DIR": str(tmp_path / "data"),
        "WORKBENCH_DATABASE_URL": "postgresql://wb:s%40cret@db.example:5432/workbench",
        "WORKBENCH_BROKER_URL": "redis://redis:6379/0",
        "WORKBENCH_ADMIN_PASSWORD": " correct horse ",
        "WORKBENCH_MAX_UPLOAD_MB": "1024",
        "WORKBENCH_HEARTBEAT_SECONDS": "0.5",
        "WORKBENCH_STALE_AFTER_SECONDS": "2.5",
        "WORKBENCH_WORKER_QUEUES": " gpu , default,gpu ,",
        "WORKBENCH_DEVICE": "CUDA:1",
    })
    assert settings.data_dir == tmp_path.resolve() / "data"
    # psycopg 3 is the driver we ship; the URL-encoded password survives the rewrite.
    assert settings.database_url == "postgresql+psycopg://wb:s%40cret@db.example:5432/workbench"
    assert settings.broker_url == "redis://redis:6379/0" and not settings.uses_embedded_broker
    assert settings.admin_password == "correct horse"  # surrounding blanks are a copy-paste accident
    assert settings.max_upload_mb == 1024
    assert settings.heartbeat_seconds == 0.5 and settings.stale_after_seconds == 2.5
    assert settings.worker_queues == ("gpu", "default")
    assert settings.device == "cuda:1"


def test_get_settings_reads_the_environment_on_every_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "one"))
    assert get_settings().data_dir == tmp_path.resolve() / "one"
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "two"))
    assert get_settings().data_dir == tmp_path.resolve() / "two"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WORKBENCH_MAX_UPLOAD_MB", "lots", "WORKBENCH_MAX_UPLOAD_MB must be a whole number"),
        ("WORKBENCH_MAX_UPLOAD_MB", "1.5", "WORKBENCH_MAX_UPLOAD_MB must be a whole number"),
        ("WORKBENCH_MAX_UPLOAD_MB", "0", "WORKBENCH_MAX_UPLOAD_MB must be greater than 0"),
        ("WORKBENCH_HEARTBEAT_SECONDS", "-1", "WORKBENCH_HEARTBEAT_SECONDS must be greater than 0"),
        ("WORKBENCH_HEARTBEAT_SECONDS", "nan", "WORKBENCH_HEARTBEAT_SECONDS must be greater than 0"),
        ("WORKBENCH_STALE_AFTER_SECONDS", "soon", "WORKBENCH_STALE_AFTER_SECONDS must be a number"),
        ("WORKBENCH_STALE_AFTER_SECONDS", "5", "must be greater than WORKBENCH_HEARTBEAT_SECONDS"),
        ("WORKBENCH_WORKER_QUEUES", " , ,", "names no queue"),
        ("WORKBENCH_WORKER_QUEUES", "gpu queue", "may use only letters"),
        ("WORKBENCH_DATABASE_URL", "not a url", "WORKBENCH_DATABASE_URL is not a database URL"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_settings(environ={variable: value})


def test_repr_hides_secrets() -> None:
    settings = get_settings(environ={
        "WORKBENCH_DATABASE_URL": "postgresql://wb:hunter2-db@db/workbench",
        "WORKBENCH_BROKER_URL": "redis://:hunter2-broker@redis:6379/0",
        "WORKBENCH_ADMIN_PASSWORD": "hunter2-admin",
    })
    assert "hunter2" not in repr(settings)


def test_settings_are_immutable() -> None:
    settings = get_settings(environ={})
    with pytest.raises(AttributeError):
        settings.device = "cpu"  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_ensure_directories_creates_the_layout(tmp_path: Path) -> None:
    settings = get_settings(environ={"WORKBENCH_DATA_DIR": str(tmp_path / "data")})
    settings.ensure_directories()
    settings.ensure_directories()  # idempotent
    assert all(path.is_dir() for path in (settings.datasets_dir, settings.runs_dir, settings.tokenizers_dir))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql://u:p%25w@h:5433/d", "postgresql+psycopg://u:p%25w@h:5433/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_normalize_database_url(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


# --- safe_join -------------------------------------------------------------------------------


def test_safe_join_builds_paths_inside_base(tmp_path: Path) -> None:
    base = tmp_path / "data"  # need not exist yet
    assert safe_join(base, "runs", 42, "checkpoint") == tmp_path.resolve() / "data" / "runs" / "42" / "checkpoint"
    assert safe_join(base, "runs/7/../8") == tmp_path.resolve() / "data" / "runs" / "8"  # stays inside
    assert safe_join(base) == base.resolve()


def test_safe_join_accepts_a_relative_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert safe_join("data", "datasets", 3) == tmp_path.resolve() / "data" / "datasets" / "3"


@pytest.mark.parametrize(
    "parts",
    [
        ("..",),
        ("../etc/passwd",),
        ("runs", "..", "..", "secret"),
        ("runs/../../secret",),
        ("/etc/passwd",),
        ("runs", "/etc/passwd"),
        (Path("/tmp"),),
        ("runs\x00.txt",),
    ],
    ids=["dotdot", "dotdot-path", "dotdot-parts", "dotdot-nested", "absolute", "absolute-later", "absolute-pathlike", "nul"],
)
def test_safe_join_refuses_escapes(tmp_path: Path, parts: tuple) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path / "data", *parts)


def test_safe_join_refuses_symlinks_leading_out(tmp_path: Path) -> None:
    base = tmp_path / "data"
    base.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, base / "sneaky")
    with pytest.raises(UnsafePathError, match="escapes"):
        safe_join(base, "sneaky", "file.txt")


def test_unsafe_path_error_is_a_value_error() -> None:
    # Callers that already turn ValueError into HTTP 400 need nothing new.
    assert issubclass(UnsafePathError, ValueError)
