"""docker-compose.yml and the Dockerfile, checked by parsing (no Docker engine runs here)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_volumes():
    compose = load_compose()
    assert set(compose["services"]) == {"redis", "postgres", "web", "worker"}
    assert {"postgres-data", "workbench-data"} <= set(compose["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    # web and worker share one data volume, mounted where WORKBENCH_DATA_DIR points
    for name in ("web", "worker"):
        service = compose["services"][name]
        assert "workbench-data:/data" in service["volumes"]
        assert service["environment"]["WORKBENCH_DATA_DIR"] == "/data"
        assert set(service["depends_on"]) == {"redis", "postgres"}


def test_env_wiring_points_at_the_compose_services():
    compose = load_compose()
    postgres_env = compose["services"]["postgres"]["environment"]
    for name in ("web", "worker"):
        env = compose["services"][name]["environment"]
        assert env["WORKBENCH_BROKER_URL"].startswith("redis://redis:6379")
        url = env["WORKBENCH_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in url
        assert url.rsplit("/", 1)[1] == postgres_env["POSTGRES_DB"]
        assert url.split("//")[1].split(":")[0] == postgres_env["POSTGRES_USER"]


def test_worker_reserves_a_gpu_and_runs_one_job_at_a_time():
    worker = load_compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    command = " ".join(worker["command"])
    assert "workbench worker" in command and "--concurrency 1" in command
    web_command = " ".join(load_compose()["services"]["web"]["command"])
    assert "--no-worker" in web_command


def test_dockerfile_installs_the_packages_the_services_run():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("llm", "db", "worker", "web"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "torch==2.13.0" in dockerfile and "pip install --no-cache-dir ." in dockerfile
