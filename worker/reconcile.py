"""Housekeeping each worker process runs on a thread: a heartbeat for queue routing, and a
reconciler that (under a Redis lock, so one worker at a time) requeues jobs lost with a worker or
the broker, and expires videos past their retention.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import redis

from service import queue as api_queue
from service.db import get_sessionmaker
from service.retention import expire_videos
from vcat import tasks
from vcat.settings import get_settings
from worker import jobs

log = logging.getLogger(__name__)
LOCK_KEY = "vcat:reconcile:lock"
STATS_KEY = "vcat:workerstats:{name}"  # this process's engines: busy seconds, batches, clips


def reconcile_once() -> dict[str, int]:
    """One pass; returns how many videos it requeued or expired."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        lost = jobs.stale_processing(session, settings.job_stale_seconds)
        orphans = jobs.orphaned_queued(session, settings.requeue_queued_after_seconds)
        expired = expire_videos(session)
    if orphans:  # waiting in a backlog is not lost: re-send only what has no message pending
        pending = api_queue.pending_ids()
        if pending is not None:
            orphans = [o for o in orphans if str(o.video_id) not in pending]
    for orphan in [*lost, *orphans]:
        opts = orphan.options
        try:
            api_queue.enqueue_index(
                orphan.video_id, model=orphan.model_name, window=opts.get("window"),
                stride=opts.get("stride"), top_k=int(opts.get("top_k") or settings.default_top_k),
            )  # fmt: skip
        except api_queue.QueueUnavailable as exc:  # the row stays queued: the next pass retries
            log.warning("could not requeue %s: %s", orphan.video_id, exc)
    if lost or orphans:
        log.info("requeued %d lost and %d orphaned jobs", len(lost), len(orphans))
    return {"lost": len(lost), "orphaned": len(orphans), "expired": expired}


def engine_stats() -> dict[str, float]:
    """Totals over this process's engines; a benchmark turns deltas into an idle fraction."""
    from worker.tasks import engines

    loaded = engines()
    return {
        "at": time.time(),
        "busy_seconds": sum(e.busy_seconds for e in loaded),
        "batches": sum(e.batches for e in loaded),
        "clips": sum(e.clips for e in loaded),
    }


class Housekeeper(threading.Thread):
    def __init__(self, queues: list[str], name: str | None = None) -> None:
        super().__init__(name="vcat-housekeeper", daemon=True)
        self.queues = queues
        self.worker_name = name or f"{socket.gethostname()}-{threading.get_native_id()}"
        self.stopped = threading.Event()

    def run(self) -> None:
        settings = get_settings()
        period = settings.reconcile_seconds
        # One client for every pass (a new connection per pass was most of this thread's CPU);
        # redis-py reconnects by itself after a broker restart.
        client = redis.Redis.from_url(settings.broker_url or "", socket_timeout=5)
        while not self.stopped.is_set():
            try:
                for q in self.queues:
                    key = tasks.WORKER_KEY.format(queue=q, name=self.worker_name)
                    client.set(key, "1", ex=int(3 * period) + 1)
                client.set(
                    STATS_KEY.format(name=self.worker_name),
                    json.dumps(engine_stats()),
                    ex=int(3 * period) + 1,
                )
                if client.set(LOCK_KEY, self.worker_name, nx=True, ex=max(1, int(period) - 1)):
                    reconcile_once()
            except Exception:  # a broker or database outage: try again next period
                log.exception("housekeeping pass failed")
            self.stopped.wait(period)
        client.close()

    def stop(self) -> None:
        self.stopped.set()
