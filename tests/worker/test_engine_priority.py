"""A CPU worker's engine: its decode threads yield to the model's thread, which is the critical
path there (the bundled demo model, loaded as a worker loads it)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vcat.settings import get_settings
from worker.video.pipeline import IndexEngine

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="nice is per thread on Linux"
)


@pytest.fixture
def start_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., IndexEngine]]:
    from worker import tasks

    engines: list[IndexEngine] = []

    def start(**env: str) -> IndexEngine:
        monkeypatch.setenv("VCAT_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("VCAT_DEVICE", "cpu")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        engines.append(tasks._load_engine("demo"))
        return engines[-1]

    yield start
    for engine in engines:
        engine.close()
    get_settings.cache_clear()


def _nice(tid: int | None) -> int:
    assert tid is not None
    return os.getpriority(os.PRIO_PROCESS, tid)


def _decoder_nices(engine: IndexEngine, expected: int) -> list[int]:
    """The decode threads' nice values, once they have set them (they do so as they start)."""
    threads = engine._batcher._threads
    deadline = time.monotonic() + 10
    while True:
        nices = [_nice(t.native_id) for t in threads]
        if all(n == expected for n in nices) or time.monotonic() > deadline:
            return nices
        time.sleep(0.01)  # poll, not spin: the threads need the CPU to start


def test_cpu_decoders_run_below_the_model_thread(start_engine: Callable[..., IndexEngine]) -> None:
    base = _nice(0)  # this thread's: the engine's threads, started from it, inherit it
    engine = start_engine(VCAT_DECODE_NICE="7")
    assert _decoder_nices(engine, min(19, base + 7)) == [min(19, base + 7)] * 2
    assert _nice(engine._thread.native_id) == base


def test_decode_nice_zero_keeps_equal_priority(start_engine: Callable[..., IndexEngine]) -> None:
    base = _nice(0)
    engine = start_engine(VCAT_DECODE_NICE="0")
    time.sleep(0.2)  # the threads have started; none may have changed its priority
    assert _decoder_nices(engine, base) == [base, base]
    assert _nice(engine._thread.native_id) == base
