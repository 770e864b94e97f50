"""Jobs on several machines (issue 20 item 4): `nodes: M` workers, one torchrun each, one c10d rendezvous whose
endpoint is published through the database (`job_nodes`, migration 0013); nobody types a MASTER_ADDR.

    node 0 (the leader): the worker whose ordinary claim took the job
      1. picks a free port on its address and writes its JobNode row with the endpoint "address:port";
      2. sends M-1 more run_job messages for the job, so that M-1 other workers come;
      3. starts torchrun --nnodes M --rdzv-endpoint address:port (its agent hosts the c10d store) and waits
         as for any job on several processes (launcher.py), its heartbeat fenced by the attempt as ever.
    node k (a follower): a worker whose run_job message names a running job that still waits for nodes
      1. adds its JobNode row at the next place: (job, attempt, node_rank) is unique, so two workers racing for
         one place never both get it (the loser looks again); the row records the device slots its ranks take
         (the first of its worker's free ones, picked under the worker's slot lock as a claim picks them), so the
         worker's other processes count them as held until the row is left;
      2. starts torchrun with the published endpoint and its own ranks, which write nothing (only global rank 0,
         on the leader, writes), and beats its row while they run.

Failures and what becomes of the job:
  - not enough workers: torchrun's own join timeout (WORKBENCH_RENDEZVOUS_TIMEOUT_S, default 600 s) ends the
    leader's rendezvous; the leader fails the attempt saying how many of the M workers joined and what it
    waited for. Until then its log says what it waits for.
  - a worker dies during the rendezvous (before any rank started): a follower's row stops beating, so the
    leader ends its torchrun and puts the job back in the queue (a new attempt, a new rendezvous); the leader
    dying is the reaper's usual case (its heartbeat stops; the job is requeued). No rank ran: nothing was
    written, so nothing is written twice.
  - a worker dies during training: the ranks on the others lose their peers, torchrun fails, and the leader
    fails the attempt naming the node that stopped beating; the job resumes from its last checkpoint, on as many
    nodes and devices as it then asks for (a checkpoint resumes at any world size).

Each node's ranks are told the node's reachable address (WORKBENCH_NODE_ADDRESS, default this machine's fully
qualified name, which is also torchrun's default) with --local-addr.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Job, JobNode, JobStatus, utcnow
from worker.jobs.devices import node_of, pick_slots

logger = logging.getLogger(__name__)

NODE_ADDRESS_ENV = "WORKBENCH_NODE_ADDRESS"
RENDEZVOUS_TIMEOUT_ENV = "WORKBENCH_RENDEZVOUS_TIMEOUT_S"
DEFAULT_RENDEZVOUS_TIMEOUT_S = 600.0  # torchrun's own default join timeout
BUSY_RESEND_S = 1.0  # a worker that got a join message for a job it already takes part in passes it on after this


@dataclass(frozen=True)
class Place:
    """This worker's place in one attempt of a multi-node job."""

    job_id: int
    attempt: int
    node_rank: int
    nodes: int
    endpoint: str
    row_id: int
    devices: tuple[str, ...] | None = None  # a follower's slots on its worker (node 0's: the job's assigned_devices)


def job_nodes(job: Job) -> int:
    """How many workers the job runs on (its `nodes` param, default 1)."""
    value = (job.params or {}).get("nodes", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def node_address() -> str:
    """The address other machines reach this worker at: WORKBENCH_NODE_ADDRESS, else this machine's name."""
    return os.environ.get(NODE_ADDRESS_ENV, "").strip() or socket.getfqdn()


def rendezvous_timeout_s() -> float:
    raw = os.environ.get(RENDEZVOUS_TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_RENDEZVOUS_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{RENDEZVOUS_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    return max(1.0, value)


def free_port(address: str) -> int:
    """A port free on `address` now (the c10d store binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
        probe.bind((address if address not in ("localhost",) else "127.0.0.1", 0))
        return probe.getsockname()[1]


def endpoint_of(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# ----------------------------------------------------------------------------- the leader

def publish(session: Session, job_id: int, attempt: int, worker_host: str) -> Place:
    """Node 0's row with the rendezvous endpoint on this machine; commits."""
    job = session.get(Job, job_id)
    address = node_address()
    endpoint = endpoint_of(address, free_port(address))
    row = JobNode(job_id=job_id, attempt=attempt, node_rank=0, worker_host=worker_host, endpoint=endpoint)
    session.add(row)
    session.commit()
    return Place(job_id, attempt, 0, job_nodes(job), endpoint, row.id)


def members(session: Session, job_id: int, attempt: int) -> list[JobNode]:
    rows = list(session.scalars(select(JobNode).where(JobNode.job_id == job_id, JobNode.attempt == attempt)
                                .order_by(JobNode.node_rank)))
    session.commit()
    return rows


def beat(session: Session, place: Place) -> None:
    session.execute(update(JobNode).where(JobNode.id == place.row_id).values(heartbeat_at=utcnow()))
    session.commit()


def leave(session: Session, place: Place) -> None:
    session.execute(update(JobNode).where(JobNode.id == place.row_id).values(left_at=utcnow()))
    session.commit()


def silent_nodes(rows: list[JobNode], stale_after_s: float) -> list[JobNode]:
    """The followers among `rows` whose worker stopped beating (or whose torchrun already exited)."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    return [row for row in rows if row.node_rank > 0 and (row.left_at is not None or row.heartbeat_at < cutoff)]


# ----------------------------------------------------------------------------- a follower

def join(session: Session, job_id: int, worker_host: str,
         free_slots: Sequence[str] | None = None) -> Place | None | bool:
    """Take the next free place in the job's current attempt: the Place, whose row records the first of this
    worker's `free_slots` the job's `devices` take (None: the worker declared no slots, nothing counted or
    recorded); None when the job waits for no worker (finished, not multi-node, full); False when it waits but this
    worker already takes part in it or has fewer than the job's devices free. The caller holds the worker's slot
    lock (launcher.take_place), so no other of its processes picks the same free slots meanwhile."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status != JobStatus.running or job_nodes(job) < 2:
        session.commit()
        return None
    nodes, attempt = job_nodes(job), job.attempts
    devices = None if free_slots is None else pick_slots(free_slots, max(1, job.devices or 1))
    if free_slots is not None and devices is None:
        session.commit()
        return False
    for _ in range(nodes):
        rows = members(session, job_id, attempt)
        leader = next((row for row in rows if row.node_rank == 0), None)
        if leader is None or leader.endpoint is None or len(rows) >= nodes:
            return None
        if any(node_of(row.worker_host) == node_of(worker_host) for row in rows):
            return False
        place = max(row.node_rank for row in rows) + 1
        row = JobNode(job_id=job_id, attempt=attempt, node_rank=place, worker_host=worker_host, devices=devices)
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # another worker took this place a moment before us: look again
            session.rollback()
            continue
        return Place(job_id, attempt, place, nodes, leader.endpoint, row.id,
                     None if devices is None else tuple(devices))
    return None


def attempt_state(session: Session, place: Place) -> str:
    """Where the attempt this follower joined stands: "running"; "finished" (rank 0 recorded its outcome: the
    ranks here are ending on their own and their torchrun must reach torchrun's exit barrier, or node 0's waits
    there for it); "gone" (the job went back to the queue, or on to another attempt: node 0 was lost)."""
    row = session.execute(select(Job.status, Job.attempts).where(Job.id == place.job_id)).first()
    session.commit()
    if row is None or row.attempts != place.attempt or row.status == JobStatus.queued:
        return "gone"
    return "running" if row.status == JobStatus.running else "finished"


def count_joined(session: Session, job_id: int, attempt: int) -> int:
    count = session.scalar(select(func.count()).select_from(JobNode)
                           .where(JobNode.job_id == job_id, JobNode.attempt == attempt)) or 0
    session.commit()
    return count
