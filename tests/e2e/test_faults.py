"""Fault injection on the real `workbench serve`: kill -9 its worker and its embedded Redis mid-work.

One `serve` process (embedded Redis, one local worker, its own data directory and port, fast
heartbeats) is shared by the tests of this module, in order:

  1. kill -9 of the worker while it trains: /api/health turns 503 naming the worker, serve starts a
     new worker without being restarted, the job is requeued at once, resumes from its checkpoint
     on the new worker and succeeds with every step's loss recorded once; health is 200 again.
  2. kill -9 of the embedded Redis, three times in a row: it is restarted each time on the same
     port with a growing back-off (1, 2, 4 s); while it is down health is 503 naming the broker and
     a job is submitted; once it is back that job and the one submitted next both run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Server, admin_password, command_line, descendants

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

FAST = {"WORKBENCH_HEARTBEAT_SECONDS": "1", "WORKBENCH_STALE_AFTER_SECONDS": "4",
        "WORKBENCH_RESEND_AFTER_SECONDS": "3",
        # Two shared cores: one torch thread keeps the machine usable for everyone.
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SMALL_TOKENIZER = "faults-bpe"
TINY_PRETRAIN = {"preset": "tiny", "tokenizer": SMALL_TOKENIZER, "block_size": 32, "batch_size": 4, "lr": 3e-3,
                 "warmup": 2, "eval_batches": 2, "device": "cpu", "eval_every": 0}
FINISHED = ("succeeded", "failed", "cancelled")


class Platform:
    """The running serve, an admin client and the id of an uploaded text dataset."""

    def __init__(self, server: Server, client: httpx.Client, dataset_id: int):
        self.server, self.client, self.dataset_id = server, client, dataset_id

    def child_pids(self, marker: str) -> list[int]:
        return [pid for pid in descendants(self.server.process.pid) if marker in command_line(pid)]

    def one_child(self, marker: str) -> int:
        pids = self.child_pids(marker)
        assert len(pids) == 1, (marker, pids, self.server.output[-3000:])
        return pids[0]

    def submit(self, kind: str, params: dict) -> int:
        answer = self.client.post("/api/jobs", json={"kind": kind, "params": params})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def job(self, job_id: int) -> dict:
        return self.client.get(f"/api/jobs/{job_id}").json()

    def logs(self, job_id: int) -> list[str]:
        return [line["line"] for line in self.client.get(f"/api/jobs/{job_id}/logs").json()]

    def wait_finished(self, job_id: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in FINISHED:
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} still {job['status']} after {timeout}s: {self.logs(job_id)}\n"
                            f"{self.server.output[-4000:]}")
            time.sleep(0.5)
        return job

    def wait_until(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.server.output[-4000:]}")
            time.sleep(0.1)
        return value


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("faults") / "data"
    server = Server(data_dir, env_overrides=FAST)
    try:
        server.wait_healthy()
        auth = ("admin", admin_password(server.output))
        with httpx.Client(base_url=server.base_url, auth=auth, timeout=30) as client:
            corpus = "\n\n".join(f"Document {i} tells a different story about tokens, rivers and cats number {i}."
                                 for i in range(400))
            dataset = client.post("/api/datasets", files={"file": ("docs.txt", corpus.encode())},
                                  data={"name": "docs", "kind": "text"})
            assert dataset.status_code == 201, (dataset.text, server.output[-4000:])
            platform = Platform(server, client, dataset.json()["id"])
            # A 320-token BPE: a tiny-model step is ~10x cheaper than with GPT-2's 50k vocabulary.
            tokenizer_job = platform.submit("train_tokenizer", {"dataset_id": platform.dataset_id,
                                                                "vocab_size": 320, "name": SMALL_TOKENIZER})
            assert platform.wait_finished(tokenizer_job, 120)["status"] == "succeeded"
            yield platform
    finally:
        server.kill()


def checkpoint_step(run_dir: Path) -> int:
    from llm.train import checkpoint_dir

    try:
        found = checkpoint_dir(run_dir)
        return json.loads((found / "checkpoint.json").read_text())["step"] if found else 0
    except (FileNotFoundError, json.JSONDecodeError, KeyError):  # renamed while we looked
        return 0


def test_a_killed_worker_is_replaced_and_its_job_resumes(platform: Platform):
    max_steps = 200
    job_id = platform.submit("pretrain", {"dataset_id": platform.dataset_id, "max_steps": max_steps,
                                          "log_every": 1, "checkpoint_every": 10, **TINY_PRETRAIN})
    run_dir = platform.server.data_dir / f"runs/{job_id}"
    platform.wait_until(lambda: checkpoint_step(run_dir) >= 10, 180, "the first checkpoint")
    old_worker = platform.one_child("worker.runtime.main")
    os.kill(old_worker, signal.SIGKILL)
    killed_at = time.monotonic()
    checkpoint_at_kill = checkpoint_step(run_dir)
    assert checkpoint_at_kill < max_steps, "the run finished before the kill; raise max_steps"

    # Health names the dead part while it is down...
    code, body = platform.wait_until(
        lambda: (answer := platform.server.health())[0] == 503 and answer, 30, "health to report the dead worker")
    assert body["status"] == "error" and body["database"] == "ok" and body["broker"] == "ok", body
    assert body["processes"]["worker"].startswith("down") or body["workers"].startswith("down"), body

    # ...a new worker replaces it without a restart of serve, and health is 200 again.
    new_worker = platform.wait_until(lambda: [p for p in platform.child_pids("worker.runtime.main") if p != old_worker],
                                     30, "a new worker")[0]
    body = platform.server.wait_healthy(timeout=60)
    assert body["processes"]["worker"] == f"running (pid {new_worker}, 1 restart)", body
    assert platform.server.process.poll() is None
    assert re.search(rf"worker \(pid {old_worker}\) killed by SIGKILL; restarting it in 1 s", platform.server.output)

    job = platform.wait_finished(job_id, 240)
    print(f"worker killed -> job succeeded {time.monotonic() - killed_at:.1f}s later")
    assert job["status"] == "succeeded", (job, platform.logs(job_id))
    assert job["attempts"] == 2
    lines = platform.logs(job_id)
    assert any(line.startswith("worker lost:") and "exited (its process is gone)" in line for line in lines), lines
    assert f"resuming from the checkpoint at step {checkpoint_at_kill}" in lines, lines
    # The submit records its estimate (the pretrain kind has one), then the reaper's requeue.
    assert [event["action"] for event in job["events"]][:3] == ["submitted", "estimated", "requeued"], job["events"]
    steps = sorted(m["step"] for m in platform.client.get(f"/api/jobs/{job_id}/metrics").json() if m["name"] == "loss")
    assert steps == list(range(1, max_steps + 1))  # every step once: nothing lost, nothing trained twice


def test_a_killed_redis_is_restarted_and_queued_jobs_run(platform: Platform):
    platform.server.wait_healthy(timeout=60)
    redis_pid = platform.one_child("redis-server")
    redis_cmdline = command_line(redis_pid)
    # Killed three times in a row: the back-off grows 1, 2, 4 s (it resets only after a stable minute).
    for expected_backoff in (1, 2, 4):
        os.kill(redis_pid, signal.SIGKILL)
        code, body = platform.wait_until(lambda: (a := platform.server.health())[0] == 503 and a, 10,
                                         "health to report the broker down")
        assert body["broker"] != "ok" and body["database"] == "ok", body
        platform.wait_until(lambda: re.search(rf"redis \(pid {redis_pid}\) killed by SIGKILL; restarting it in "
                                              rf"{expected_backoff} s", platform.server.output), 10,
                            f"a restart announced {expected_backoff} s ahead")
        if expected_backoff < 4:  # let it come back fully before the next kill
            body = platform.server.wait_healthy(timeout=60)
            new_pid = int(re.match(r"running \(pid (\d+)", body["processes"]["redis"]).group(1))
            assert new_pid != redis_pid and command_line(new_pid) == redis_cmdline  # the same port
            redis_pid = new_pid
    # Submitted while the broker is down (for about 4 s now): the message cannot be sent.
    while_down = platform.submit("prepare", {"dataset_id": platform.dataset_id, "tokenizer": "gpt2"})
    assert platform.job(while_down)["status"] == "queued"
    body = platform.server.wait_healthy(timeout=90)
    assert body["processes"]["redis"].startswith("running") and body["broker"] == "ok", body
    after = platform.submit("prepare", {"dataset_id": platform.dataset_id, "tokenizer": "gpt2",
                                        "val_fraction": 0.1})
    for job_id in (while_down, after):
        job = platform.wait_finished(job_id, 180)
        assert job["status"] == "succeeded", (job, platform.logs(job_id))
        assert job["attempts"] == 1
    assert "resent" in [event["action"] for event in platform.job(while_down)["events"]]
