"""What the broker (Redis) holds right now: is it up, and which run_job messages wait in a queue.

The reaper uses `waiting_job_ids` to re-send only the queued jobs whose message is gone (lost with
a restarted Redis, or published while nothing listened), and /api/health uses `ping_broker`.
Both speak plain Redis to the broker URL the settings name: the workbench's only broker.

kombu's Redis transport keeps a queue as a list (new messages pushed on the left) and, when
priorities are used, one more list per priority step named `<queue>\\x06\\x16<step>`. Each item is
a JSON envelope whose base64 `body` is Celery's protocol 2 `[args, kwargs, embed]`; run_job's only
argument is the job id. A message delivered to a worker but not yet acknowledged sits in the
`unacked` hash (`[envelope, exchange, routing key]` by delivery tag), its delivery time in the
`unacked_index` sorted set.
"""

from __future__ import annotations

import base64
import json
import logging
import time

from worker.jobs.presence import redis_client

logger = logging.getLogger(__name__)

# kombu.transport.redis: PRIORITY_STEPS and the separator of priority queue names.
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEPARATOR = "\x06\x16"
_UNACKED_KEY, _UNACKED_INDEX_KEY = "unacked", "unacked_index"


def ping_broker(broker_url: str) -> None:
    """Return when the broker answers PING; raise (redis.RedisError, OSError) when it does not."""
    client = redis_client(broker_url)
    try:
        client.ping()
    finally:
        client.close()


def queue_list_names(queue: str) -> list[str]:
    """The Redis lists kombu keeps for `queue`: the plain one and one per priority step."""
    return [queue] + [f"{queue}{_PRIORITY_SEPARATOR}{step}" for step in _PRIORITY_STEPS if step]


def message_job_id(raw: bytes | dict) -> int | None:
    """The job id a raw kombu message carries, or None for anything else found in the list."""
    try:
        envelope = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        body = json.loads(base64.b64decode(envelope["body"]))
        return int(body[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def waiting_job_ids(broker_url: str, queue: str, delivered_within_s: float = 0.0) -> set[int]:
    """Job ids of the run_job messages waiting in `queue`, plus those delivered to a worker less than
    `delivered_within_s` ago and not acknowledged yet (the worker is about to claim their job; an
    older unacknowledged message may belong to a worker that died, and no longer counts).

    Raises when the broker is unreachable: the caller then cannot tell which messages are gone.
    """
    client = redis_client(broker_url)
    try:
        pipeline = client.pipeline(transaction=False)
        for name in queue_list_names(queue):
            pipeline.lrange(name, 0, -1)
        lists = pipeline.execute()
        recent_tags = (client.zrangebyscore(_UNACKED_INDEX_KEY, time.time() - delivered_within_s, "+inf")
                       if delivered_within_s > 0 else [])
        delivered = client.hmget(_UNACKED_KEY, recent_tags) if recent_tags else []
    finally:
        client.close()
    found = {message_job_id(raw) for messages in lists for raw in messages}
    for raw in delivered:
        try:
            envelope, _exchange, routing_key = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if routing_key == queue:
            found.add(message_job_id(envelope))
    found.discard(None)
    return found
