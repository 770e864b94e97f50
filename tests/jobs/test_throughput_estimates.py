"""worker/jobs/throughput.py: which time an estimate gives (a worker's probe of the exact shape, a model fitted from
its probes, or an assumed share of peak), how a worker probes and publishes, what a submit records, and what a
finished job's card says of it; the pretrain form's tokenizer advice and its first-stage tokenizer."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.models import DatasetKind, Job, JobStatus
from llm.throughput import Probe, ProbeShape
from tests.support.records import add_dataset
from worker.jobs import lifecycle as jobs, throughput
from worker.jobs.throughput import Prober, estimated_seconds, load_probes, step_time

TINY_GPT2 = ProbeShape(2, 2, 64, 50304, 16, 128)
TINY_FIT = ProbeShape(2, 2, 64, 2112, 16, 128)
SMALL_GPT2 = ProbeShape(6, 6, 384, 50304, 16, 128)


def worker(node: str, probes: list[Probe], gpu: bool = False) -> dict:
    """A live worker as `fit.live_worker_capacities` lists it, with its published probes."""
    name = "NVIDIA H100" if gpu else "cpu (2 threads)"
    return {"node": node, "alive": True,
            "capacity": {"ram_bytes": 8 << 30, "gpu_memory_bytes": [80 << 30] if gpu else [],
                         "throughput": {"device_name": name, "probes": [probe.to_dict() for probe in probes]}}}


def no_peak() -> float:
    raise AssertionError("a measured or fitted time must not measure this machine's peak")


def test_the_exact_shape_is_measured_else_fitted_else_assumed():
    probes = [Probe(TINY_GPT2, 2.0, 1.5, "cpu (2 threads)"), Probe(TINY_FIT, 0.2, 0.1, "cpu (2 threads)"),
              Probe(SMALL_GPT2, 4.0, 2.0, "cpu (2 threads)")]
    measured = step_time(TINY_GPT2, "cpu", [worker("w1", probes)], no_peak)
    assert (measured.source, measured.step_seconds, measured.eval_batch_seconds) == ("measured", 2.0, 1.5)
    assert "worker w1" in measured.basis
    # two workers measured it: the slower one, since either may take the job
    slower = step_time(TINY_GPT2, "cpu", [worker("w1", probes), worker("w2", [Probe(TINY_GPT2, 3.0, 2.0, "cpu")])],
                       no_peak)
    assert (slower.step_seconds, "w2" in slower.basis) == (3.0, True)
    unseen = ProbeShape(4, 4, 256, 50304, 16, 128)
    fitted = step_time(unseen, "cpu", [worker("w1", probes)], no_peak)
    assert fitted.source == "fitted" and "3 probes" in fitted.basis and fitted.step_seconds > 0
    # a GPU worker's probes say nothing of a CPU run
    assumed = step_time(TINY_GPT2, "cpu", [worker("gpu", probes, gpu=True)], lambda: 1e10)
    assert assumed.source == "assumed" and "30%" in assumed.basis
    assert assumed.step_seconds == pytest.approx(TINY_GPT2.flops_per_step / (1e10 * 0.3))


def test_a_worker_probes_the_standard_shapes_once_publishes_them_and_keeps_them(tmp_path, monkeypatch):
    probed = []

    def fake_probe(shape, device, steps=3):
        probed.append(shape.key)
        return Probe(shape, shape.flops_per_step / 1e10, shape.flops_per_step / 3e10, "cpu (2 threads)")

    monkeypatch.setattr("llm.throughput.probe", fake_probe)
    capacity = {"ram_bytes": 1}
    prober = Prober(tmp_path, capacity, device="cpu", poll_s=0.05).start()
    prober._thread.join(timeout=0.5)  # the standard shapes, then polling for requests (no broker: none)
    prober.stop()
    prober._thread.join(timeout=5)
    standard = throughput.standard_shapes("cpu")
    assert sorted(probed) == sorted(shape.key for shape in standard) and len(standard) == 4
    assert {key.split("-V")[1].split("-")[0] for key in probed} == {"50304", "2112", "16448"}  # GPT-2's, fitting
    published = capacity["throughput"]
    assert published["device_name"] == "cpu (2 threads)" and len(published["probes"]) == 4
    assert set(load_probes(next((tmp_path / "throughput").glob("*.json")))) == set(probed)
    # A restarted worker reads them instead of probing again
    probed.clear()
    again = Prober(tmp_path, {}, device="cpu", poll_s=0.05).start()
    again._thread.join(timeout=0.5)
    again.stop()
    assert probed == [] and len(again.capacity["throughput"]["probes"]) == 4


def test_jobs_share_the_device_and_a_probe_waits_for_them_and_holds_new_ones():
    import threading

    use, events = throughput.DeviceUse(), []

    def probe_now():
        with use.probe():
            events.append("probe")

    with use.job(), use.job():  # two jobs of a threads pool run together
        prober = threading.Thread(target=probe_now)
        prober.start()
        prober.join(timeout=0.2)
        assert prober.is_alive() and events == []  # the probe waits while a job runs
    prober.join(timeout=5)
    assert events == ["probe"]
    with use.probe():
        starter = threading.Thread(target=lambda: use.job().__enter__() and None)
        starter.start()
        starter.join(timeout=0.2)
        assert starter.is_alive()  # a job waits for the probe in progress
    starter.join(timeout=5)
    assert not starter.is_alive()


def test_a_job_waiting_for_a_probe_goes_before_the_next_probe():
    """A worker probes its standard shapes one after another at its start: a job that arrives during one probe runs
    when that probe ends, not after all of them (it waited minutes for the small preset's probes in a browser test)."""
    import threading

    use, events = throughput.DeviceUse(), []

    def run_job():
        with use.job():
            events.append("job")

    with use.probe():
        job = threading.Thread(target=run_job)
        job.start()
        job.join(timeout=0.2)
        assert job.is_alive() and events == []  # it waits for the probe in progress
    with use.probe():  # the prober's next shape, asked for at once
        events.append("probe")
    job.join(timeout=5)
    assert events == ["job", "probe"]


def test_a_submit_records_its_estimate_and_the_card_compares_it_with_the_time_taken(workbench_env, session,
                                                                                     monkeypatch):
    from web.services.jobs import get_job_detail
    from web.ui.jobs_tab import estimate_vs_actual

    probes = [Probe(TINY_GPT2, 2.0, 1.0, "cpu (2 threads)")]
    monkeypatch.setattr("worker.jobs.fit.live_worker_capacities", lambda settings: [worker("w1", probes)])
    dataset = add_dataset(session, workbench_env, DatasetKind.text, [json.dumps({"text": "some text " * 50})] * 20,
                          "corpus")
    job = jobs.create_job(session, "pretrain", {"dataset_id": dataset.id, "max_steps": 10, "eval_every": 0,
                                                "eval_batches": 5})
    detail = get_job_detail(job.id, session=session)
    assert detail["estimate"] == {"seconds": pytest.approx(10 * 2.0 + 1 * 5 * 1.0), "source": "measured"}
    event = next(event for event in detail["events"] if event["action"] == "estimated")
    assert "measured on cpu (2 threads) (worker w1)" in event["detail"]
    assert estimated_seconds(detail["events"]) == (25.0, "measured")
    assert estimate_vs_actual({**detail, "status": "queued"}, None) == "estimated ~25s (measured)"
    said = estimate_vs_actual({**detail, "status": "succeeded"}, 50.0)
    assert said == "estimated ~25s (measured), took 50s: 50% short"
    assert estimate_vs_actual({"estimate": None}, 50.0) is None


def test_the_pretrain_estimate_proposes_a_fitting_tokenizer_when_the_head_is_most_of_the_work(workbench_env):
    from web import services

    tiny = services.estimate_run("pretrain", {"max_steps": 10})
    assert tiny["head_share"] > 0.95 and tiny["fitting_vocab"] == 2048
    assert "96%" in tiny["tokenizer_advice"] and "2048" in tiny["tokenizer_advice"]
    assert tiny["time_source"] == "assumed"  # no worker here: said so
    small = services.estimate_run("pretrain", {"max_steps": 10, "preset": "small"})
    assert small["fitting_vocab"] == 16384 and 0.5 < small["head_share"] < 0.7
    fitted = services.estimate_run("pretrain", {"max_steps": 10, "new_tokenizer_vocab": 2048})
    assert "tokenizer_advice" not in fitted and fitted["config"]["vocab_size"] == 2112
    assert fitted["est_seconds"] < tiny["est_seconds"] / 5
    wide = services.estimate_run("pretrain", {"max_steps": 10, "preset": "gpt2-124m"})
    assert "tokenizer_advice" not in wide and wide["head_share"] < 0.5


@pytest.mark.slow
def test_a_pretrain_job_trains_its_fitting_tokenizer_first_and_reuses_it(workbench_env, session, one_torch_thread):
    from llm.tokenizer import get_tokenizer
    from worker.runtime.runner import execute_job

    text = [json.dumps({"text": f"line {i}: the quick brown fox jumps over the lazy dog near river {i % 17}."})
            for i in range(600)]
    dataset = add_dataset(session, workbench_env, DatasetKind.text, text, "foxes")
    params = {"dataset_id": dataset.id, "max_steps": 2, "batch_size": 2, "block_size": 32, "eval_batches": 1,
              "new_tokenizer_vocab": 300}
    job = jobs.create_job(session, "pretrain", params)
    assert job.params["tokenizer"] == f"dataset{dataset.id}-bpe300"
    claimed = jobs.claim_next_job(session, "test-host")
    assert execute_job(job.id, claimed.attempts, workbench_env) == JobStatus.succeeded
    assert get_tokenizer(f"dataset{dataset.id}-bpe300", workbench_env.data_dir).vocab_size == 303
    second = jobs.create_job(session, "pretrain", params)
    claimed = jobs.claim_next_job(session, "test-host")
    assert execute_job(second.id, claimed.attempts, workbench_env) == JobStatus.succeeded
    session.expire_all()
    from db.models import JobLog

    lines = list(session.scalars(select(JobLog.line).where(JobLog.job_id == second.id)))
    assert any("trained on dataset" in line and "before" in line for line in lines)
    assert session.get(Job, second.id).output_model_id is not None
