"""Platform responsiveness: how fast a submitted job starts, and how fast the job list answers under load.

Starts `workbench serve` (the real thing: `python -m web.cli serve`, embedded Redis, one local
worker with the solo pool) on a free port in a temporary data directory, then measures over HTTP:

  (a) submit → running: N tiny `prepare` jobs, one after another (each waits for the previous to
      finish, so the worker is idle when the next arrives). Latency = from the moment the
      POST /api/jobs response is received to the first poll (every 20 ms, GET /api/jobs/{id}) that
      sees the job no longer queued. When a job is so quick that the poll only ever sees it
      finished, the job's own started_at (same machine, same clock) is used instead. The first job
      is a warm-up (the worker imports torch and loads the tokenizer on it) and is not counted.
      Target: median < 1 s.
  (b) GET /api/jobs latency while a longer pretrain job trains on the same machine (competing for
      the CPU cores and writing metrics to the same SQLite database): ~200 sequential requests,
      p95. Target: < 200 ms.

Prints the figures and returns {"submit_to_running_median_s", "jobs_list_p95_ms", ...}.
Run: `python -m bench.bench_platform [--quick]`.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN_PASSWORD = "bench-admin-password"
POLL_S = 0.02
START_TIMEOUT_S = 180.0
JOB_TIMEOUT_S = 300.0
TARGET_SUBMIT_TO_RUNNING_S = 1.0
TARGET_JOBS_LIST_P95_MS = 200.0
FINISHED = ("succeeded", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: with 200 samples p95 is the 190th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def _corpus(documents: int = 300) -> bytes:
    words = ("the model reads tokens and learns which token comes next in a document written by people "
             "about gardens rivers engines music history science and the weather in winter").split()
    lines = []
    for index in range(documents):
        shift = index % len(words)
        lines.append(f"Document {index}: " + " ".join(words[shift:] + words[:shift]) + ".")
    return "\n\n".join(lines).encode()


class ServeProcess:
    """`workbench serve` in a subprocess; its output goes to a log file in the data directory."""

    def __init__(self, data_dir: Path):
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
        env["WORKBENCH_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        env["PYTHONUNBUFFERED"] = "1"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "serve.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_healthy(self) -> float:
        start = time.perf_counter()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/api/health", timeout=2).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serve not healthy within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _wait_finished(client: httpx.Client, job_id: int, timeout: float = JOB_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = client.get(f"/api/jobs/{job_id}").json()
        if detail["status"] in FINISHED:
            return detail
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not finish within {timeout} s")


def _submit_to_running(client: httpx.Client, params: dict) -> tuple[float, str]:
    """Seconds from the POST response to the job seen running, and how it was seen ("poll" | "started_at")."""
    response = client.post("/api/jobs", json={"kind": "prepare", "params": params})
    response.raise_for_status()
    submitted_wall, submitted = time.time(), time.perf_counter()
    job_id = response.json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        detail = client.get(f"/api/jobs/{job_id}").json()
        if detail["status"] == "running":
            latency, how = time.perf_counter() - submitted, "poll"
            break
        if detail["status"] in FINISHED:
            started = datetime.fromisoformat(detail["started_at"]).timestamp()
            latency, how = max(0.0, started - submitted_wall), "started_at"
            break
        time.sleep(POLL_S)
    else:
        raise RuntimeError(f"job {job_id} never started")
    finished = _wait_finished(client, job_id)
    if finished["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {finished['status']}: {finished['error']}")
    return latency, how


def _jobs_list_under_training(client: httpx.Client, dataset_id: int, requests: int) -> tuple[list[float], dict]:
    params = {"dataset_id": dataset_id, "tokenizer": "gpt2", "preset": "tiny", "max_steps": 100_000,
              "batch_size": 8, "block_size": 64, "eval_every": 0, "checkpoint_every": 0, "log_every": 1}
    response = client.post("/api/jobs", json={"kind": "pretrain", "params": params})
    response.raise_for_status()
    job_id = response.json()["id"]
    # Wait until it really trains (metrics arriving), not merely "running" while importing torch.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        detail = client.get(f"/api/jobs/{job_id}").json()
        if detail["status"] in FINISHED:
            raise RuntimeError(f"training job {job_id} ended early: {detail['status']} {detail['error']}")
        if detail["metrics"]:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("the training job never reported a metric")
    latencies = []
    for _ in range(requests):
        start = time.perf_counter()
        listed = client.get("/api/jobs")
        latencies.append((time.perf_counter() - start) * 1000)
        listed.raise_for_status()
    detail = client.get(f"/api/jobs/{job_id}").json()
    client.post(f"/api/jobs/{job_id}/cancel")
    _wait_finished(client, job_id)
    return latencies, detail


def run(quick: bool = False) -> dict:
    jobs = 5 if quick else 10
    list_requests = 100 if quick else 200
    with tempfile.TemporaryDirectory(prefix="bench_platform_") as tmp:
        server = ServeProcess(Path(tmp) / "data")
        try:
            startup_s = server.wait_healthy()
            with httpx.Client(base_url=server.base_url, auth=("admin", ADMIN_PASSWORD), timeout=60) as client:
                dataset = client.post("/api/datasets", files={"file": ("bench.txt", _corpus())},
                                      data={"name": "bench corpus", "kind": "text"})
                dataset.raise_for_status()
                params = {"dataset_id": dataset.json()["id"], "tokenizer": "gpt2"}
                _submit_to_running(client, params)  # warm-up: the worker's first job pays its imports
                samples = [_submit_to_running(client, params) for _ in range(jobs)]
                latencies_s = [latency for latency, _ in samples]
                list_ms, training = _jobs_list_under_training(client, dataset.json()["id"], list_requests)
        except Exception:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            server.stop()

    result = {
        "submit_to_running_median_s": statistics.median(latencies_s),
        "jobs_list_p95_ms": _percentile(list_ms, 0.95),
        "submit_to_running_max_s": max(latencies_s),
        "submit_to_running_samples_s": [round(x, 3) for x in latencies_s],
        "submit_to_running_seen_by": [how for _, how in samples],
        "jobs_list_median_ms": statistics.median(list_ms),
        "jobs_list_requests": len(list_ms),
        "training_tokens_per_s": training["metrics"].get("tokens_per_s"),
        "serve_startup_s": startup_s,
    }
    print(f"platform bench ({jobs} tiny jobs, {len(list_ms)} job-list requests during training; "
          f"serve healthy after {startup_s:.1f} s)")
    print(f"  submit -> running   median {result['submit_to_running_median_s']:.3f} s, "
          f"max {result['submit_to_running_max_s']:.3f} s   (target < {TARGET_SUBMIT_TO_RUNNING_S:g} s)")
    print(f"  GET /api/jobs       p95 {result['jobs_list_p95_ms']:.1f} ms, "
          f"median {result['jobs_list_median_ms']:.1f} ms"
          f"   (target p95 < {TARGET_JOBS_LIST_P95_MS:g} ms; training at "
          f"{result['training_tokens_per_s'] or 0:.0f} tokens/s meanwhile)")
    return result


def main(argv: list[str] | None = None) -> dict:
    from bench.common import command_line

    return command_line(run, __doc__.splitlines()[0], "5 jobs and 100 list requests", argv)


if __name__ == "__main__":
    main()
