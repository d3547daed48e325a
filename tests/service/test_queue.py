"""Where the API sends indexing jobs: the gpu queue while a GPU worker is alive, else cpu."""

from __future__ import annotations

import pytest
import redis

from service import queue
from vcat import tasks

pytestmark = [pytest.mark.broker]


@pytest.fixture(autouse=True)
def _fresh_lookup(vcat_env: dict[str, str]) -> None:
    queue._gpu_alive.clear()


def test_auto_routing_follows_gpu_worker_heartbeats(redis_client: redis.Redis) -> None:
    assert queue.index_queue() == tasks.CPU_QUEUE
    key = tasks.WORKER_KEY.format(queue=tasks.GPU_QUEUE, name="gpu-host-1")
    redis_client.set(key, "1", ex=30)
    # The lookup is cached for 2 s: a GPU worker that just started is seen after that.
    assert queue.index_queue() == tasks.CPU_QUEUE
    queue._gpu_alive.clear()
    assert queue.index_queue() == tasks.GPU_QUEUE
    redis_client.delete(key)
    queue._gpu_alive.clear()
    assert queue.index_queue() == tasks.CPU_QUEUE


def test_queue_depth_counts_waiting_jobs(redis_client: redis.Redis) -> None:
    assert queue.queue_depth() == 0
    redis_client.rpush(tasks.CPU_QUEUE, "a", "b")
    assert queue.queue_depth() == 2


def test_explicit_queue_setting_wins(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vcat.settings import get_settings

    redis_client.set(tasks.WORKER_KEY.format(queue=tasks.GPU_QUEUE, name="g"), "1", ex=30)
    monkeypatch.setenv("VCAT_INDEX_QUEUE", "cpu")
    get_settings.cache_clear()
    assert queue.index_queue() == tasks.CPU_QUEUE


def test_unreachable_broker_means_cpu_and_unknown_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import free_port
    from vcat.settings import get_settings

    monkeypatch.setenv("VCAT_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    assert queue.index_queue() == tasks.CPU_QUEUE
    assert queue.queue_depth() is None
