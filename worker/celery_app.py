"""The Celery application of vcat's workers (``celery -A worker.celery_app worker``).

Reliability settings, and why:
- ``acks_late`` + ``reject_on_worker_lost``: a job is acknowledged only when it has ended, so a
  worker that dies mid-job leaves its message to be delivered again.
- prefetch 1: a worker reserves one job per free slot; the rest stay in Redis for other workers.
- a visibility timeout above the longest job: Redis redelivers an unacknowledged message only
  after it, so it must never fire while the job is still running. Jobs lost with their worker are
  requeued much sooner by the reconciler (``worker.reconcile``), which watches Postgres heartbeats.
- the jobs run on threads (``--pool threads``) so the jobs of one process share one warm model
  and one batcher (``worker.engine``).
"""

from __future__ import annotations

from celery import Celery

from vcat import tasks
from vcat.broker import to_kombu_url
from vcat.settings import Settings, get_settings

LONGEST_JOB_SECONDS = 6 * 3600


def make_celery(settings: Settings) -> Celery:
    app = Celery("vcat", broker=to_kombu_url(settings.broker_url or "redis://127.0.0.1:6379/0"))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=tasks.CPU_QUEUE,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # ride out a Redis restart
        broker_transport_options={"visibility_timeout": LONGEST_JOB_SECONDS + 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        include=["worker.tasks"],
    )
    return app


app = make_celery(get_settings())
