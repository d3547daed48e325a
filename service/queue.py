"""Enqueue indexing through Celery by task name: the API never imports the worker (no torch)."""

from __future__ import annotations

import re
import uuid
from functools import lru_cache

import redis
from celery import Celery

from service.ttl_cache import TtlCache
from vcat import tasks
from vcat.broker import to_kombu_url
from vcat.settings import get_settings


class QueueUnavailable(RuntimeError):
    """The broker did not take the message."""


@lru_cache(maxsize=4)
def _celery(broker_url: str) -> Celery:
    app = Celery("vcat-api", broker=to_kombu_url(broker_url))
    app.conf.broker_connection_timeout = 5
    app.conf.broker_connection_retry_on_startup = False
    return app


def enqueue_index(
    video_id: uuid.UUID,
    *,
    model: str | None,
    window: float | None,
    stride: float | None,
    top_k: int,
) -> str:
    """Send INDEX_VIDEO for one video; returns the Celery task id."""
    settings = get_settings()
    if not settings.broker_url:
        raise QueueUnavailable("VCAT_BROKER_URL is not set")
    args, kwargs = tasks.index_video_message(
        str(video_id), model=model, window=window, stride=stride, top_k=top_k
    )
    try:
        result = _celery(settings.broker_url).send_task(
            tasks.INDEX_VIDEO, args=args, kwargs=kwargs, queue=index_queue(), retry=False
        )
    except Exception as exc:  # kombu raises many types; all mean "not queued"
        raise QueueUnavailable(f"could not enqueue indexing: {exc}") from exc
    return str(result.id)


@lru_cache(maxsize=4)
def _redis(broker_url: str) -> redis.Redis:
    """One client (a connection pool) per broker for the process: a fresh connection per upload
    cost more CPU than the upload's own database work."""
    return redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)


# Whether a GPU worker is alive, looked up at most every 2 s: a SCAN per upload is wasted work,
# and a GPU worker that starts (or dies) is noticed within the heartbeat's own granularity.
_gpu_alive = TtlCache[bool](seconds=2.0)


def _gpu_worker_alive(broker_url: str) -> bool:
    def scan() -> bool:
        try:
            pattern = tasks.WORKER_KEY.format(queue=tasks.GPU_QUEUE, name="*")
            keys = _redis(broker_url).scan_iter(match=pattern, count=100)
            return next(iter(keys), None) is not None
        except (redis.RedisError, OSError, ValueError):
            return False

    return bool(_gpu_alive.get(broker_url, scan))


def index_queue() -> str:
    """The queue indexing goes to now (``auto``: gpu while a GPU worker is alive, else cpu)."""
    settings = get_settings()
    if settings.index_queue != "auto":
        return settings.index_queue
    return tasks.resolve_queue("auto", _gpu_worker_alive(settings.broker_url or ""))


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def pending_ids() -> set[str] | None:
    """Every id (video ids among them) in a message still waiting in an index queue; None when
    the broker cannot be read. The reconciler re-sends a long-queued video only when no message
    of it waits, so a backlog is not multiplied. (A message a worker took and holds unacked
    does not count: a live worker claims at once, so a queued video's unacked message belongs
    to a dead worker and returns only after the visibility timeout.)"""
    settings = get_settings()
    if not settings.broker_url:
        return None
    try:
        pipe = _redis(settings.broker_url).pipeline(transaction=False)
        for queue in (tasks.CPU_QUEUE, tasks.GPU_QUEUE):  # kombu: a Redis list per queue
            pipe.lrange(queue, 0, -1)
        found: set[str] = set()
        for messages in pipe.execute():
            for raw in messages:
                found.update(m.decode() for m in _UUID.findall(raw))
        return found
    except (redis.RedisError, OSError, ValueError):
        return None


def queue_depth() -> int | None:
    """Messages waiting in the index queue (Redis list length); None if unknown."""
    settings = get_settings()
    if not settings.broker_url:
        return None
    try:
        return int(_redis(settings.broker_url).llen(index_queue()))
    except (redis.RedisError, OSError, ValueError):
        return None
