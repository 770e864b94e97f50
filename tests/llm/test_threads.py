"""The thread budget (llm/threads.py): a process's share of the machine's cores, and who decided it."""

from __future__ import annotations

import pytest
import torch

from llm import threads
from llm.threads import JOB_PROCESSES_ENV, apply_thread_budget, thread_budget, thread_note

ENVIRONMENT = (JOB_PROCESSES_ENV, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


@pytest.fixture
def eight_cores(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "machine_cores", lambda: 8)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_lone_process_takes_every_core(eight_cores):
    budget = thread_budget()
    assert (budget.threads, budget.processes) == (8, 1) and "8 cores ÷ 1 process" in budget.describe()


def test_a_worker_s_job_slots_share_the_cores(eight_cores, monkeypatch):
    monkeypatch.setenv(JOB_PROCESSES_ENV, "3")
    assert thread_budget().threads == 2  # 8 // 3: never more threads than cores in all
    monkeypatch.setenv(JOB_PROCESSES_ENV, "16")
    assert thread_budget().threads == 1


def test_torchrun_ranks_share_the_cores_whatever_omp_torchrun_set(eight_cores, monkeypatch):
    # torchrun sets OMP_NUM_THREADS=1 for each rank when it was unset: under torchrun it is not the person's say.
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    budget = thread_budget()
    assert budget.threads == 4 and "2 torchrun ranks" in budget.reason
    # A launcher that declares its job processes (the worker, later launching torchrun) is believed first.
    monkeypatch.setenv(JOB_PROCESSES_ENV, "4")
    assert thread_budget().threads == 2


def test_a_person_s_omp_num_threads_wins_outside_torchrun(eight_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv(JOB_PROCESSES_ENV, "2")
    assert thread_budget().threads == 3 and "OMP_NUM_THREADS=3" in thread_budget().reason


def test_a_bad_count_is_refused_by_name(eight_cores, monkeypatch):
    monkeypatch.setenv(JOB_PROCESSES_ENV, "two")
    with pytest.raises(ValueError, match=JOB_PROCESSES_ENV):
        thread_budget()


def test_applying_sets_torch_and_the_training_log_says_so(eight_cores, monkeypatch):
    monkeypatch.setenv(JOB_PROCESSES_ENV, "8")
    lines = []
    budget = apply_thread_budget(log=lines.append)
    assert torch.get_num_threads() == budget.threads == 1
    assert lines == ["torch threads: 1 (8 cores ÷ 8 job processes (WORKBENCH_JOB_PROCESSES))"]
    assert thread_note() == lines[0]
    torch.set_num_threads(2)  # someone else changed it since: the note says so instead of a stale reason
    assert "not by the thread budget" in thread_note()
