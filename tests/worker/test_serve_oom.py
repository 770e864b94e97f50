"""`serve`'s solo-pool worker killed by the kernel's OOM killer: its job fails for that reason and is not
offered again (a resume would only be killed again); a worker killed otherwise has its job requeued."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from db.models import Job, JobStatus
from web import serve


class DeadWorker:
    """What `take_back_jobs_of_dead_worker` sees of a worker process that has exited."""

    def __init__(self, pid: int, for_memory: bool):
        self.pid = pid
        self.for_memory = for_memory

    def stop(self) -> None:
        pass

    def killed_for_memory(self) -> bool:
        return self.for_memory


def running_job(session, pid: int) -> Job:
    job = Job(kind="pretrain", status=JobStatus.running, params={}, progress=0.3, attempts=1,
              cancel_requested=False, worker_host=f"workbench-{pid}@{socket.gethostname()}:{pid}")
    session.add(job)
    session.commit()
    return job


@pytest.mark.parametrize("for_memory", [True, False])
def test_the_job_of_a_worker_killed_for_memory_fails(workbench_env, session, monkeypatch, for_memory):
    monkeypatch.setattr("worker.jobs.lifecycle.enqueue", lambda job_id: True)  # no broker needed for the requeue
    job = running_job(session, 4242)
    serve.take_back_jobs_of_dead_worker(DeadWorker(4242, for_memory))
    session.expire_all()
    job = session.get(Job, job.id)
    if for_memory:
        assert job.status == JobStatus.failed and not job.resumable and "out of memory" in job.error
    else:
        assert job.status == JobStatus.queued and job.resumable


@pytest.mark.subprocess
def test_killed_for_memory_needs_sigkill_and_a_new_oom_kill(monkeypatch):
    counts = iter([7, 8])
    monkeypatch.setattr(serve, "kernel_oom_kills", lambda: next(counts))
    monkeypatch.setattr(serve, "start_worker_process", lambda env: subprocess.Popen(["sleep", "60"]))
    worker = serve.LocalWorker({})
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()
    assert worker.killed_for_memory()  # SIGKILL, and the OOM counter went 7 -> 8
    monkeypatch.setattr(serve, "kernel_oom_kills", lambda: 7)
    assert not worker.killed_for_memory()  # SIGKILL, but no OOM kill: someone's kill -9
    monkeypatch.setattr(serve, "kernel_oom_kills", lambda: None)
    assert not worker.killed_for_memory()  # no /proc/vmstat: never guess
