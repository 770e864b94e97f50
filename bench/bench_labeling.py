"""Many labelers at once through the REST API: nothing lost, nothing doubled, no pair over its overlap, and
how long a label takes to store.

For each database (SQLite, then PostgreSQL when one answers at WORKBENCH_BENCH_POSTGRES_URL, default the
local server's `test` cluster): a fresh database, the web app in its own process (uvicorn, one worker, as
`workbench serve` runs it, timed), a labeling project of 1,800 pairs with overlap 2, then N labeler threads for
T seconds, each looping think → POST .../labels?next=true (the label, answered with the next pair: one request
per label, as the Label tab works; GET .../next only for the first pair and after a refusal), and one POST in
twenty sent twice (a client retrying after a lost answer: it must come back 200 with the same label and the
same next pair). Side by side, the same load with two requests per label (GET .../next before every POST, as
clients did before ?next existed), and the ratios. Afterwards the database is read directly: labels stored
must equal the 201 answers, and no pair may hold more labels than its overlap.

Latency is from sending the POST to its answer, per request, as the client sees it; p50 and p99 over all of
them (target p99 < 200 ms). The app also says, in a Server-Timing header (bench/labeling_server.py: the real
app with a timing layer), how long it took itself and where that time went (thread pool, connection pool,
SQL, write lock, auth, progress): p50/p99 of that, the median parts, and the parts of the slowest 1% are
reported, with the CPU the server and the clients used (they share this machine's cores). Think time is
uniform in [0.5, 1.5] s: a fast human. Password hashes are made with few bcrypt rounds (hashing is not what
is measured; the server caches verified credentials anyway).

Before the load, per database: the labeling code's own CPU per label, one labeler in this process, no HTTP
(`service_cpu_per_label`): the figure to compare when the code of a label changes.

    python -m bench.bench_labeling [--quick]     (quick: 20 labelers for 15 s)
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-labeler-password"
OVERLAP = 2
TARGET_P99_MS = 200.0
POSTGRES_URL = os.environ.get("WORKBENCH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank (no interpolation)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


# ----------------------------------------------------------------------------- set-up

def populate(database_url: str, labelers: int, prompts: int = 300, answers: int = 4) -> int:
    """Migrate, create the labelers and a trainer, a finished generate job with `answers` per prompt, and
    a project over it; returns the project id."""
    import db.users
    from db.migrate import upgrade
    from db.models import Completion, Job, JobStatus, Prompt, Role
    from db.session import SessionLocal
    from web.services.labeling import create_project

    upgrade(database_url)
    db.users.BCRYPT_ROUNDS = 4
    with SessionLocal(database_url) as session:
        trainer = db.users.create_user(session, "bench-trainer", PASSWORD, Role.trainer)
        for number in range(labelers):
            db.users.create_user(session, f"labeler{number}", PASSWORD, Role.labeler)
        job = Job(kind="generate", status=JobStatus.succeeded, params={}, progress=1.0, attempts=1,
                  cancel_requested=False)
        session.add(job)
        session.flush()
        for p in range(prompts):
            prompt = Prompt(text=f"prompt {p}", messages=[{"role": "user", "content": f"prompt {p}"}])
            session.add(prompt)
            session.flush()
            session.add_all(Completion(prompt_id=prompt.id, job_id=job.id, text=f"answer {p}.{a} " * 20,
                                       sampling={}, seed=a) for a in range(answers))
        session.commit()
        return create_project(session, trainer, name="bench", source_job_ids=[job.id], overlap=OVERLAP).id


class AppProcess:
    """The web app under uvicorn in a subprocess, for `database_url`."""

    def __init__(self, database_url: str, data_dir: Path):
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "WORKBENCH_DATABASE_URL": database_url, "WORKBENCH_DATA_DIR": str(data_dir),
               "PYTHONPATH": str(REPO_ROOT)}
        self.log = open(data_dir / "app.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.labeling_server:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited: {self.tail()}")
            try:
                if httpx.get(f"{self.base_url}/api/health", timeout=2).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the app did not answer within {timeout} s: {self.tail()}")

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# ----------------------------------------------------------------------------- the load

def server_timing(answer: httpx.Response) -> dict[str, float]:
    """The app's own account of a request (bench/labeling_server.py): {name: ms}."""
    timings = {}
    for part in answer.headers.get("server-timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            timings[name] = float(duration)
    return timings


def label_for(base_url: str, project_id: int, labelers: int, seconds: float, think_s: tuple[float, float],
              seed: int = 0, one_request_per_label: bool = True) -> dict:
    """`labelers` threads labeling for `seconds`; returns what the clients saw, and what the server said
    each request cost it (`submit_server`, `next_server`: Server-Timing of each request).

    One request per label (the default, as the Label tab does it): each POST .../labels?next=true answers with
    the next pair, and GET .../next is asked only at the start and after a refusal. Otherwise a GET before
    every POST (two requests per label: what a client did before ?next existed)."""
    lock = threading.Lock()
    seen = {"created": 0, "repeats_ok": 0, "refused": 0, "errors": [], "submit_ms": [], "next_ms": [],
            "submit_server": [], "next_server": [], "done_early": 0, "submit_at_s": []}
    began = time.monotonic()
    deadline = began + seconds
    path = f"/api/labeling/projects/{project_id}"
    params = {"next": "true"} if one_request_per_label else {}

    def labeler(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        pair = None
        with httpx.Client(base_url=base_url, auth=(f"labeler{number}", PASSWORD), timeout=30) as client:
            while time.monotonic() < deadline:
                if pair is None:
                    started = time.perf_counter()
                    shown = client.get(f"{path}/next")
                    next_ms = 1000 * (time.perf_counter() - started)
                    if shown.status_code == 204:
                        with lock:
                            seen["done_early"] += 1
                        return
                    if shown.status_code != 200:
                        with lock:
                            seen["errors"].append(f"next {shown.status_code} {shown.text[:200]}")
                        return
                    with lock:
                        seen["next_ms"].append(next_ms)
                        seen["next_server"].append(server_timing(shown))
                    pair = shown.json()
                time.sleep(rng.uniform(*think_s))
                body = {"pair_id": pair["pair_id"], "choice": rng.choice(["left", "right", "tie", "both_bad"]),
                        "left_answer_id": pair["left"]["answer_id"], "idempotency_key": uuid.uuid4().hex}
                started = time.perf_counter()
                answer = client.post(f"{path}/labels", params=params, json=body)
                submit_ms = 1000 * (time.perf_counter() - started)
                retry = client.post(f"{path}/labels", params=params, json=body) if rng.random() < 0.05 else None
                stored = answer.json() if answer.status_code in (200, 201) else {}
                # The pair to label next: the one this answer brought, else ask for one.
                pair = stored.get("next") if one_request_per_label else None
                with lock:
                    seen["submit_ms"].append(submit_ms)
                    seen["submit_at_s"].append(time.monotonic() - began)
                    seen["submit_server"].append(server_timing(answer))
                    if answer.status_code == 201:
                        seen["created"] += 1
                    elif answer.status_code == 409:
                        seen["refused"] += 1
                    else:
                        seen["errors"].append(f"label {answer.status_code} {answer.text[:200]}")
                    if one_request_per_label and stored and "next" not in stored:
                        seen["errors"].append(f"label ?next=true answered without the next pair: {answer.text[:200]}")
                    if retry is not None:
                        repeated = retry.json() if retry.status_code == 200 else {}
                        # A retry gets the stored label, and the same next pair (it is held for this labeler).
                        same_next = (repeated.get("next") or {}).get("pair_id") == (pair or {}).get("pair_id")
                        if repeated.get("id") == stored.get("id") and (same_next or not one_request_per_label):
                            seen["repeats_ok"] += 1
                        elif answer.status_code == 201:
                            seen["errors"].append(f"retry {retry.status_code} {retry.text[:200]}")
                if one_request_per_label and stored and pair is None:
                    with lock:
                        seen["done_early"] += 1
                    return

    threads = [threading.Thread(target=labeler, args=(n,)) for n in range(labelers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def breakdown(server: list[dict[str, float]]) -> dict[str, float]:
    """Median of each Server-Timing part over these requests (ms; `sql` a count)."""
    names = sorted({name for timings in server for name in timings})
    return {name: round(percentile([t.get(name, 0.0) for t in server], 0.5), 2) for name in names}


def stored_counts(database_url: str) -> dict:
    """What the database holds: labels and the most labels any pair has."""
    from sqlalchemy import func, select

    from db.models import Comparison, LabelingPair
    from llm.preference_labels import Label
    from db.session import SessionLocal

    with SessionLocal(database_url) as session:
        stored = session.scalar(select(func.count(Comparison.id)).where(Comparison.label != Label.skip))
        per_pair = session.execute(select(Comparison.pair_id, func.count(Comparison.id))
                                   .where(Comparison.label != Label.skip).group_by(Comparison.pair_id)).all()
        counters = session.scalars(select(LabelingPair.label_count)).all()
    over = sum(1 for _, count in per_pair if count > OVERLAP)
    # The pairs' counters (what the overlap guard reads) must add up to the labels stored.
    return {"stored": stored, "pairs_over_overlap": over, "max_labels_on_a_pair": max((c for _, c in per_pair), default=0),
            "counter_sum": sum(counters)}


def slowest_breakdown(client_ms: list[float], server: list[dict[str, float]], fraction: float = 0.01) -> dict:
    """Mean of each Server-Timing part over the slowest `fraction` of requests as the client saw them, and
    `unaccounted`: client time minus the server's total (the network, uvicorn's event loop before the app,
    and the client's own threads waiting for a CPU or the GIL)."""
    slowest = sorted(zip(client_ms, server), key=lambda pair: pair[0])[-max(1, int(len(client_ms) * fraction)):]
    names = sorted({name for _, timings in slowest for name in timings})
    means = {name: round(sum(t.get(name, 0.0) for _, t in slowest) / len(slowest), 1) for name in names}
    means["client"] = round(sum(ms for ms, _ in slowest) / len(slowest), 1)
    means["unaccounted"] = round(means["client"] - means.get("total", 0.0), 1)
    return means


def windows_of(values: list[float], at_s: list[float], width_s: float) -> list[list[float]]:
    """`values` grouped by when they happened (`at_s`, seconds since the start) into windows `width_s` wide."""
    windows: list[list[float]] = [[] for _ in range(int(max(at_s, default=0.0) // width_s) + 1)]
    for value, at in zip(values, at_s):
        windows[int(at // width_s)].append(value)
    return windows


def measure(database_url: str, labelers: int, seconds: float, think_s=(0.5, 1.5),
            one_request_per_label: bool = True) -> dict:
    """One database: set up, serve, load, check."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="bench_labeling_") as tmp:
        project_id = populate(database_url, labelers)
        app = AppProcess(database_url, Path(tmp))
        try:
            app.wait_healthy()
            server_process, client_process = psutil.Process(app.process.pid), psutil.Process()
            server_cpu, client_cpu = sum(server_process.cpu_times()[:2]), sum(client_process.cpu_times()[:2])
            started = time.monotonic()
            seen = label_for(app.base_url, project_id, labelers, seconds, think_s,
                             one_request_per_label=one_request_per_label)
            wall = time.monotonic() - started
            server_cpu = sum(server_process.cpu_times()[:2]) - server_cpu
            client_cpu = sum(client_process.cpu_times()[:2]) - client_cpu
            load_average = os.getloadavg()[0]
        except Exception:
            print(app.tail(), file=sys.stderr)
            raise
        finally:
            app.stop()
    counts = stored_counts(database_url)
    submit, nxt = seen["submit_ms"], seen["next_ms"]
    submit_server = [t.get("total", 0.0) for t in seen["submit_server"]]
    next_server = [t.get("total", 0.0) for t in seen["next_server"]]
    requests = len(submit) + len(nxt)
    return {
        "labels_acknowledged": seen["created"], "labels_stored": counts["stored"],
        "labels_lost_or_doubled": counts["stored"] - seen["created"], "counter_sum": counts["counter_sum"],
        "pairs_over_overlap": counts["pairs_over_overlap"], "max_labels_on_a_pair": counts["max_labels_on_a_pair"],
        "refused_409": seen["refused"], "retries_answered_with_the_same_label": seen["repeats_ok"],
        "errors": seen["errors"][:5], "error_count": len(seen["errors"]), "labelers_done_early": seen["done_early"],
        "labels_per_s": seen["created"] / seconds,
        "submit_p50_ms": percentile(submit, 0.5) if submit else None,
        "submit_p99_ms": percentile(submit, 0.99) if submit else None,
        # p99 per 10 s of the run: a stall at start-up (every labeler's first request at once) and one in steady
        # state look the same in the overall p99.
        "submit_p99_ms_per_10_s": [round(percentile(window, 0.99), 1) for window in windows_of(
            submit, seen["submit_at_s"], 10.0) if window],
        "next_requests": len(nxt),
        "next_p50_ms": percentile(nxt, 0.5) if nxt else None,
        "next_p99_ms": percentile(nxt, 0.99) if nxt else None,
        # What the app itself took (bench/labeling_server.py), without the network and the client.
        "submit_server_p50_ms": percentile(submit_server, 0.5) if submit else None,
        "submit_server_p99_ms": percentile(submit_server, 0.99) if submit else None,
        "next_server_p50_ms": percentile(next_server, 0.5) if nxt else None,
        "next_server_p99_ms": percentile(next_server, 0.99) if nxt else None,
        "submit_server_median_parts": breakdown(seen["submit_server"]),
        "next_server_median_parts": breakdown(seen["next_server"]),
        "submit_slowest_1pct_parts": slowest_breakdown(submit, seen["submit_server"]) if submit else {},
        "next_slowest_1pct_parts": slowest_breakdown(nxt, seen["next_server"]) if nxt else {},
        # The load: CPU seconds per wall second (2.0 = both cores of this machine) and per request.
        "server_cpu_per_s": server_cpu / wall, "client_cpu_per_s": client_cpu / wall,
        "server_cpu_ms_per_request": 1000 * server_cpu / max(1, requests),
        "server_cpu_ms_per_label": 1000 * server_cpu / max(1, seen["created"]),
        "client_cpu_ms_per_request": 1000 * client_cpu / max(1, requests),
        "load_average_1min": load_average,
    }


def service_cpu_per_label(database_url: str, labelers: int = 50, labels: int = 550) -> dict:
    """The labeling code's own CPU per label, without HTTP or load: `submit_label(..., and_next=True)` in this
    thread, round-robin over `labelers`, each call in a new session after looking its labeler up by name (as a
    request does). Median and p90 of CPU time (`time.thread_time`) and wall time per label, first round left
    out (connections, caches). Steadier than the load test's CPU per label, which the host's noise moves."""
    from db.session import SessionLocal
    from db.users import user_named
    from web.services.labeling import next_pair, submit_label

    project_id = populate(database_url, labelers)
    rng = random.Random(0)
    shown = {}
    for number in range(labelers):
        with SessionLocal(database_url) as session:
            shown[number] = next_pair(session, user_named(session, f"labeler{number}"), project_id)
    cpu_ms, wall_ms = [], []
    for count in range(labels):
        number = count % labelers
        pair = shown[number]
        cpu_started, wall_started = time.thread_time(), time.perf_counter()
        with SessionLocal(database_url) as session:
            stored = submit_label(session, user_named(session, f"labeler{number}"), project_id, pair["pair_id"],
                                  rng.choice(["left", "right", "tie"]), pair["left"]["answer_id"],
                                  idempotency_key=uuid.uuid4().hex, and_next=True)
        if count >= labelers:
            cpu_ms.append(1000 * (time.thread_time() - cpu_started))
            wall_ms.append(1000 * (time.perf_counter() - wall_started))
        shown[number] = stored["next"]
    return {"service_cpu_ms_per_label_p50": percentile(cpu_ms, 0.5),
            "service_cpu_ms_per_label_p90": percentile(cpu_ms, 0.9),
            "service_wall_ms_per_label_p50": percentile(wall_ms, 0.5)}


def fresh_postgres_database() -> tuple[str, callable] | None:
    """A new empty PostgreSQL database and its cleanup, or None when no server answers."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        admin = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        name = f"wbbench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except Exception as error:  # noqa: BLE001 - reported, the SQLite figures still stand
        print(f"bench_labeling: no PostgreSQL ({type(error).__name__}: {error}); SQLite only", file=sys.stderr)
        return None

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False), drop


# How the clients ask for pairs: (one_request_per_label, figure-name suffix, what the printout calls it).
PROTOCOLS = ((True, "", "one request"), (False, ", two requests", "two requests"))


def on_a_fresh_database(backend: str, measurement, *args, **kwargs):
    """`measurement(database_url, *args, **kwargs)` on a new SQLite file or a new PostgreSQL database (None when
    no PostgreSQL answers)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench_labeling_db_") as tmp:
            return measurement(f"sqlite:///{tmp}/bench.db", *args, **kwargs)
    postgres = fresh_postgres_database()
    if postgres is None:
        return None
    url, drop = postgres
    try:
        return measurement(url, *args, **kwargs)
    finally:
        from db.session import dispose_engines

        dispose_engines()  # this process's pooled connections to it go first (DROP ... FORCE would cut them)
        drop()


def summary(result: dict) -> str:
    """One measurement in words: counts, latencies (client and app), CPU, and where the time went."""
    return (f"{result['labels_acknowledged']} labels acknowledged, {result['labels_stored']} stored, "
            f"{result['pairs_over_overlap']} pairs over the overlap, {result['refused_409']} refused (409), "
            f"{result['error_count']} errors; submit p50/p99 {result['submit_p50_ms']:.1f}/"
            f"{result['submit_p99_ms']:.1f} ms at the client (target p99 < {TARGET_P99_MS:g}), "
            f"{result['submit_server_p50_ms']:.1f}/{result['submit_server_p99_ms']:.1f} ms in the app; next "
            f"p50/p99 {result['next_p50_ms']:.1f}/{result['next_p99_ms']:.1f} ms, "
            f"{result['next_server_p50_ms']:.1f}/{result['next_server_p99_ms']:.1f} in the app "
            f"({result['next_requests']} asked); server CPU {result['server_cpu_ms_per_label']:.1f} "
            f"ms per label; CPU per s: server {result['server_cpu_per_s']:.2f}, clients "
            f"{result['client_cpu_per_s']:.2f}; load {result['load_average_1min']:.1f}; submit p99 per 10 s "
            f"{result['submit_p99_ms_per_10_s']}"
            f"\n  submit, median parts: {result['submit_server_median_parts']}"
            f"\n  submit, slowest 1%: {result['submit_slowest_1pct_parts']}"
            f"\n  next, median parts: {result['next_server_median_parts']}"
            f"\n  next, slowest 1%: {result['next_slowest_1pct_parts']}")


def run(quick: bool = False) -> dict:
    """Each database, with one request per label (POST ...?next=true, as the Label tab does) and, side by side,
    with two (GET next, then POST): the same labelers, the same pace."""
    labelers, seconds = (20, 15.0) if quick else (50, 60.0)
    figures: dict = {"labeling_labelers": labelers, "labeling_seconds": seconds}
    for backend in ("sqlite", "postgresql"):
        service = on_a_fresh_database(backend, service_cpu_per_label)
        if service is not None:
            figures.update({f"labeling_{key}[{backend}]": value for key, value in service.items()})
            print(f"{backend}, the labeling code alone (one labeler, no HTTP): CPU per label p50/p90 "
                  f"{service['service_cpu_ms_per_label_p50']:.2f}/{service['service_cpu_ms_per_label_p90']:.2f} ms, "
                  f"wall p50 {service['service_wall_ms_per_label_p50']:.2f} ms", flush=True)
        results = {}
        for one_request_per_label, suffix, requests in PROTOCOLS:
            result = on_a_fresh_database(backend, measure, labelers, seconds,
                                         one_request_per_label=one_request_per_label)
            if result is None:
                break
            results[one_request_per_label] = result
            figures.update({f"labeling_{key}[{backend}{suffix}]": value for key, value in result.items()})
            print(f"{backend}, {requests} per label: {labelers} labelers x {seconds:.0f} s: {summary(result)}",
                  flush=True)
        if len(results) == len(PROTOCOLS):
            one, two = results[True], results[False]
            ratios = {"server_cpu_per_label": two["server_cpu_ms_per_label"] / one["server_cpu_ms_per_label"],
                      "submit_p99": two["submit_p99_ms"] / one["submit_p99_ms"],
                      "labels_acknowledged": one["labels_acknowledged"] / max(1, two["labels_acknowledged"])}
            figures.update({f"labeling_two_over_one_request_{key}[{backend}]": value for key, value in ratios.items()})
            print(f"{backend}: two requests per label / one: server CPU per label "
                  f"x{ratios['server_cpu_per_label']:.2f}, submit p99 x{ratios['submit_p99']:.2f}; labels stored, "
                  f"one / two: x{ratios['labels_acknowledged']:.2f}", flush=True)
    return figures


def main(argv: list[str] | None = None) -> dict:
    from bench.common import command_line

    return command_line(run, __doc__.splitlines()[0], "20 labelers for 15 s", argv)


if __name__ == "__main__":
    main()
