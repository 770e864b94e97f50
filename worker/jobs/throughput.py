"""What a worker's device really does for a model's shape (`llm.throughput` probes), kept and shared, and the
time an estimate gives a run from it.

  - Each worker keeps its probes in `<data dir>/throughput/<device>.json` (a restarted worker keeps them) and
    publishes them with its presence (`capacity["throughput"]`, see `worker.jobs.presence`), so the web's
    estimate reads what the device that will run the job measured, not what the web machine can do.
  - `Prober` (a daemon thread a worker starts, `worker.runtime.main`) probes the standard shapes
    (`standard_shapes`: the presets at the forms' defaults, with GPT-2's vocabulary and a fitting trained one)
    and then any shape an estimate asked for (`request_probe`), one at a time and only while no job runs on
    this worker (`DEVICE_USE`): a probe never slows a job, and a job never skews a probe. That is its low
    priority; niceness would not reach torch's own threads.
  - `step_time` gives an estimate the seconds of a step and of an evaluation batch: a live worker's probe of the
    run's exact shape ("measured"), else a model fitted from that worker's probes ("fitted"; the shape is asked
    for, so the next estimate is measured), else — no worker has probed yet — a share of this machine's peak
    FLOP/s ("assumed", the guess estimates made before, 2-7x short on small models), and says which.

Imports no torch at module level (the web imports it).
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm.throughput import Probe, ProbeShape, ThroughputModel, fitting_vocab_size

logger = logging.getLogger(__name__)

# Share of the peak matmul FLOP/s assumed when no worker has probed its device yet (the old estimate's guess).
ASSUMED_UTILISATION = {"cpu": 0.3, "cuda": 0.4}
PROBE_REQUEST_KEY = "workbench:probe-requests:"   # + queue: a Redis set of ProbeShape JSON
# A shape whose step the fitted model puts above this is not probed on request (a probe runs 8 passes).
LONGEST_PROBED_STEP_S = 10.0
GPT2_VOCAB = 50_304  # GPT-2's 50,257 tokens and our chat specials, padded to 64 (llm.model.padded_vocab_size)

class DeviceUse:
    """Jobs and probes take turns on this worker's device: any number of jobs at once (a threads pool runs
    several), a probe only when none runs or waits, and no job starts while a probe runs (it waits for that one
    probe, never for the next: the prober's next probe waits behind a job that is waiting)."""

    def __init__(self):
        self._condition = threading.Condition()
        self._jobs = 0
        self._jobs_waiting = 0
        self._probing = False

    @contextmanager
    def job(self):
        with self._condition:
            self._jobs_waiting += 1
            try:
                self._condition.wait_for(lambda: not self._probing)
            finally:
                self._jobs_waiting -= 1
            self._jobs += 1
        try:
            yield
        finally:
            with self._condition:
                self._jobs -= 1
                self._condition.notify_all()

    @contextmanager
    def probe(self):
        with self._condition:
            self._condition.wait_for(lambda: self._jobs == 0 and self._jobs_waiting == 0)
            self._probing = True
        try:
            yield
        finally:
            with self._condition:
                self._probing = False
                self._condition.notify_all()


DEVICE_USE = DeviceUse()  # this process's: worker.runtime.runner runs each job in DEVICE_USE.job()


def default_dtype(device_type: str, dtype: str | None) -> str:
    """The autocast dtype a run resolves to (llm.device.resolve_dtype): bf16 on CUDA, float32 on the CPU."""
    if dtype in ("float32", "bfloat16"):
        return dtype
    return "bfloat16" if device_type == "cuda" else "float32"


def standard_shapes(device_type: str) -> list[ProbeShape]:
    """What a worker probes at its start: each preset a device trains in minutes (tiny and small on a CPU, every
    preset on a GPU) at the forms' batch and block, with GPT-2's vocabulary and with the fitting one
    (`llm.throughput.fitting_vocab_size`), so the fitted model spans the shapes people start from."""
    from llm.model import PRESETS, padded_vocab_size
    from llm.train_config import TrainConfig

    batch, block = TrainConfig.batch_size, TrainConfig.block_size
    names = list(PRESETS) if device_type == "cuda" else ["tiny", "small"]
    shapes = []
    for name in names:
        preset = PRESETS[name]
        fitting = padded_vocab_size(fitting_vocab_size(preset["n_layer"], preset["n_embd"], block) + 3)
        for vocab in (GPT2_VOCAB, fitting):
            shapes.append(ProbeShape(preset["n_layer"], preset["n_head"], preset["n_embd"], vocab, batch, block,
                                     default_dtype(device_type, None)))
    return shapes


def cache_path(data_dir: Path | str, device_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower() or "device"
    return Path(data_dir) / "throughput" / f"{slug}.json"


def load_probes(path: Path) -> dict[str, Probe]:
    """The probes kept in `path` by shape key; {} when there is none or it cannot be read (it is a cache)."""
    try:
        return {key: Probe.from_dict(data) for key, data in json.loads(path.read_text()).items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        if path.exists():
            logger.warning("throughput probes in %s not read (%s); probing again", path, error)
        return {}


def save_probes(path: Path, probes: dict[str, Probe]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({key: probe.to_dict() for key, probe in probes.items()}, indent=1))
    temporary.replace(path)


class Prober:
    """Probe this worker's device in a daemon thread and publish the probes in `capacity["throughput"]` (the
    dict its `WorkerPresence` beats): first the standard shapes not yet kept, then requested ones."""

    def __init__(self, data_dir: Path | str, capacity: dict, broker_url: str | None = None,
                 queues: tuple[str, ...] = (), device: str = "auto", poll_s: float = 5.0):
        self.data_dir, self.capacity, self.broker_url, self.queues = Path(data_dir), capacity, broker_url, queues
        self.device, self.poll_s = device, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workbench-throughput-probe", daemon=True)
        self.probes: dict[str, Probe] = {}

    def start(self) -> "Prober":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            from llm.device import pick_device
            from llm.threads import apply_thread_budget
            from llm.throughput import device_name

            apply_thread_budget(log=None)  # the torch threads a job of this worker gets (worker.runtime.runner)
            device = pick_device(self.device)
            path = cache_path(self.data_dir, device_name(device))
            self.probes = load_probes(path)
            self._publish(device_name(device))
            for shape in sorted(standard_shapes(device.type), key=lambda shape: shape.flops_per_step):
                if self._stop.is_set():
                    return
                if shape.key not in self.probes:
                    self._probe(shape, device, path)
            while not self._stop.wait(self.poll_s):
                for shape in self._requested_shapes(device.type):
                    if self._stop.is_set():
                        return
                    self._probe(shape, device, path)
        except Exception:  # probing is a refinement of estimates; it must never take a worker down
            logger.exception("throughput probing stopped")

    def _probe(self, shape: ProbeShape, device, path: Path) -> None:
        from llm.throughput import probe

        with DEVICE_USE.probe():
            measured = probe(shape, device)
        self.probes[shape.key] = measured
        save_probes(path, self.probes)
        self._publish(measured.device_name)
        logger.info("probed %s on %s: %.3f s a step", shape.key, measured.device_name, measured.step_seconds)

    def _publish(self, name: str) -> None:
        self.capacity["throughput"] = {"device_name": name,
                                       "probes": [probe.to_dict() for probe in self.probes.values()]}

    def _requested_shapes(self, device_type: str) -> list[ProbeShape]:
        """Shapes estimates asked for that this worker has not probed and can probe quickly."""
        if not self.broker_url:
            return []
        from worker.jobs.presence import redis_client

        client = redis_client(self.broker_url)
        try:
            raw = [item for queue in self.queues for item in client.smembers(PROBE_REQUEST_KEY + queue)]
        except Exception:
            return []
        finally:
            client.close()
        model = ThroughputModel.fit(list(self.probes.values()))
        shapes = []
        for item in raw:
            try:
                shape = ProbeShape(**json.loads(item))
            except (ValueError, TypeError):
                continue
            quick = model is None or model.step_seconds(shape) <= LONGEST_PROBED_STEP_S
            if shape.key not in self.probes and quick and (shape.dtype == "float32") == (device_type == "cpu"):
                shapes.append(shape)
        return shapes


def request_probe(broker_url: str, queue: str, shape: ProbeShape) -> None:
    """Ask the workers of `queue` to probe `shape` when idle (the next estimate of it is then measured)."""
    from dataclasses import asdict

    from worker.jobs.presence import redis_client

    client = redis_client(broker_url)
    try:
        key = PROBE_REQUEST_KEY + queue
        client.sadd(key, json.dumps(asdict(shape), sort_keys=True))
        client.expire(key, 24 * 3600)
    except Exception as error:
        logger.info("probe of %s not requested (broker unreachable): %s", shape.key, error)
    finally:
        client.close()


# ----------------------------------------------------------------------------- the estimate's side

@dataclass(frozen=True)
class StepTime:
    step_seconds: float           # one micro-batch's training step
    eval_batch_seconds: float     # one evaluation batch
    source: str                   # "measured", "fitted" or "assumed"
    basis: str                    # in words, for the form: what it was measured on / fitted from / assumed
    sample_token_seconds: float = 0.0  # one token of a sampled answer (0: not known)


def published_probes(workers: list[dict], device_type: str) -> list[tuple[str, list[Probe]]]:
    """[(worker node, its probes)] of live workers (`fit.live_worker_capacities`) that probed a device of
    `device_type`."""
    found = []
    for worker in workers:
        throughput = (worker.get("capacity") or {}).get("throughput") or {}
        on_cpu = str(throughput.get("device_name", "")).startswith("cpu")
        try:
            probes = [Probe.from_dict(data) for data in throughput.get("probes") or []]
        except (KeyError, TypeError, ValueError):
            continue
        if probes and on_cpu == (device_type == "cpu"):
            found.append((str(worker.get("node")), probes))
    return found


def step_time(shape: ProbeShape, device_type: str, workers: list[dict], assumed_peak_flops) -> StepTime:
    """Seconds of a step of `shape`: measured by a live worker, else fitted from a worker's probes, else assumed
    (`assumed_peak_flops()`: this machine's peak FLOP/s, called only then). Several workers: the slowest
    figure, since any of them may take the job."""
    published = published_probes(workers, device_type)
    exact = [(node, probe) for node, probes in published for probe in probes if probe.shape.key == shape.key]
    if exact:
        node, probe = max(exact, key=lambda found: found[1].step_seconds)
        return StepTime(probe.step_seconds, probe.eval_batch_seconds, "measured",
                        f"a step of this shape measured on {probe.device_name} (worker {node})",
                        probe.sample_token_seconds)
    fitted = [(node, probes[0].device_name, model) for node, probes in published
              if (model := ThroughputModel.fit(probes)) is not None]
    if fitted:
        node, name, model = max(fitted, key=lambda found: found[2].step_seconds(shape))
        seconds = model.step_seconds(shape)
        sampled = [probe.sample_token_seconds for found, probes in published if found == node for probe in probes
                   if probe.sample_token_seconds and probe.shape.n_layer == shape.n_layer
                   and probe.shape.n_embd == shape.n_embd]
        return StepTime(seconds, seconds * model.eval_share, "fitted",
                        f"fitted from {model.probes} probes of other shapes on {name} (worker {node}); "
                        "this shape is measured when the worker is idle",
                        statistics.median(sampled) if sampled else 0.0)
    utilisation = ASSUMED_UTILISATION[device_type]
    seconds = shape.flops_per_step / (assumed_peak_flops() * utilisation)
    return StepTime(seconds, seconds / 3, "assumed",
                    f"assuming {utilisation:.0%} of this machine's peak FLOP/s: no worker has measured its "
                    "device yet (often 2-7x short on small models)")


_PEAK_FLOPS_CACHE: dict[str, float] = {}


def estimate_peak_flops(device_type: str) -> float:
    """Peak FLOP/s for the "assumed" time, measured once per process (the Chat tab measures it before it limits
    this process's torch threads, see web.services.model_cache).

    GPUs: the data-sheet number when known (`llm.device.peak_flops`); a worker's GPU that this process
    cannot see: the slowest data-sheet figure known, so the time errs long. CPUs: a 1024 x 1024 float32
    matmul, which reaches the same FLOP/s as llm.device's 2048 one within a few percent here but
    costs a fraction of a second instead of seconds, so the first estimate in the UI stays quick.
    """
    if device_type not in _PEAK_FLOPS_CACHE:
        import torch

        from llm.device import KNOWN_PEAK_FLOPS, measure_matmul_peak_flops, peak_flops

        if device_type == "cuda":
            _PEAK_FLOPS_CACHE[device_type] = (peak_flops(device_type) if torch.cuda.is_available()
                                              else min(flops for _, flops in KNOWN_PEAK_FLOPS))
        else:
            _PEAK_FLOPS_CACHE[device_type] = measure_matmul_peak_flops("cpu", size=1024)
    return _PEAK_FLOPS_CACHE[device_type]


def run_time(run, params: dict[str, Any], settings) -> dict[str, Any]:
    """The time figures of a kind's estimate (`fit.RunEstimate` with a `shape`; {} without one): est_seconds
    (training steps and evaluations), step_seconds, time_source / time_basis (how it was found), head_share.
    A fitted or assumed figure asks the workers to probe the shape, so the next estimate of it is measured."""
    from worker.jobs.fit import live_worker_capacities
    from worker.jobs.messages import broker_url_of, job_queue_of

    if run is None:
        return {}
    if run.shape is None:  # a kind that does not say its step's shape: its FLOPs at the assumed share of peak
        utilisation = ASSUMED_UTILISATION[run.device_type]
        return {"est_seconds": run.flops / (estimate_peak_flops(run.device_type) * utilisation),
                "time_source": "assumed", "time_basis": f"assuming {utilisation:.0%} of this machine's peak FLOP/s"}
    workers = live_worker_capacities(settings)
    timing = step_time(run.shape, run.device_type, workers, lambda: estimate_peak_flops(run.device_type))
    if timing.source != "measured" and published_probes(workers, run.device_type):
        request_probe(broker_url_of(settings), job_queue_of(settings), run.shape)
    return time_figures(run.shape, params, timing, once_forward_batches=run.once_forward_batches,
                        watch_tokens=run.watch_tokens)


def time_figures(shape: ProbeShape, params: dict[str, Any], timing: StepTime, once_forward_batches: float = 0,
                 watch_tokens: int = 0) -> dict[str, Any]:
    """The figures an estimate shows for the time: est_seconds (training, evaluation, what the run passes forward
    once before training, and the answers a degeneration watch samples at the start and at each evaluation), per
    step, and how."""
    from llm.throughput import evaluation_count, run_seconds

    seconds = run_seconds(timing.step_seconds, timing.eval_batch_seconds, max_steps=params["max_steps"],
                          grad_accum=params.get("grad_accum") or 1, eval_every=params.get("eval_every") or 0,
                          eval_batches=params.get("eval_batches") or 20)
    seconds += once_forward_batches * timing.eval_batch_seconds
    watches = evaluation_count(params["max_steps"], params.get("eval_every") or 0) + 1
    seconds += watches * watch_tokens * timing.sample_token_seconds
    return {"est_seconds": seconds, "step_seconds": timing.step_seconds, "time_source": timing.source,
            "time_basis": timing.basis, "head_share": shape.head_share, "probe_shape": shape.key}


# ----------------------------------------------------------------------------- estimated vs actual

ESTIMATE_EVENT = "estimated"   # the job event a submit records (worker.jobs.lifecycle.create_job)
_ESTIMATE_DETAIL = re.compile(r"^(\d+(?:\.\d+)?) s \((\w+): ")


def estimate_detail(figures: dict[str, Any]) -> str | None:
    """The estimated event's text, "266 s (measured: a step of this shape measured on ...)"; None without a time."""
    if figures.get("est_seconds") is None:
        return None
    return f"{figures['est_seconds']:.1f} s ({figures['time_source']}: {figures['time_basis']})"


def estimated_seconds(events: list[dict]) -> tuple[float, str] | None:
    """(seconds, source) of a job's estimated event (`estimate_detail`'s text), or None."""
    for event in events:
        if event.get("action") == ESTIMATE_EVENT and (match := _ESTIMATE_DETAIL.match(event.get("detail") or "")):
            return float(match.group(1)), match.group(2)
    return None


def submit_estimate(session, spec, params: dict[str, Any], settings) -> str | None:
    """What a submit records of its estimate (`estimate_detail`), for kinds with one; None without. Never refuses:
    the kind's check has already passed."""
    if spec.estimate is None:
        return None
    try:
        return estimate_detail(run_time(spec.estimate(session, params, settings), params, settings))
    except Exception as error:  # an estimate is information; a job that passed its check is queued regardless
        logger.info("no time estimate recorded for a %s job: %s", spec.kind, error)
        return None
