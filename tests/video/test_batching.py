from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from worker.video.batching import Batcher


def test_clips_from_several_sources_share_batches() -> None:
    with Batcher[int](3, producers=2, max_wait=5.0) as b:
        b.submit("a", lambda: range(4))
        b.submit("b", lambda: range(10, 15))
        b.close()
        batches = list(b)
    sizes = [len(x.clips) for x in batches if x.clips]
    assert sum(sizes) == 9 and max(sizes) == 3
    assert sizes.count(3) >= 2  # full batches except at most the leftovers
    got = {k: [c for bb in batches for kk, c in bb.clips if kk == k] for k in "ab"}
    assert got == {"a": [0, 1, 2, 3], "b": [10, 11, 12, 13, 14]}  # order kept per source
    finished = [(k, e) for bb in batches for k, e in bb.finished]
    assert sorted(str(k) for k, _ in finished) == ["a", "b"] and all(e is None for _, e in finished)
    # A source is reported finished no earlier than the batch holding its last clip.
    for key in "ab":
        last = max(i for i, bb in enumerate(batches) for k, _ in bb.clips if k == key)
        done = next(i for i, bb in enumerate(batches) for k, _ in bb.finished if k == key)
        assert done >= last


def test_source_errors_are_reported_with_their_key() -> None:
    def broken() -> list[int]:
        raise ValueError("bad file")

    with Batcher[int](2) as b:
        b.submit("ok", lambda: [1])
        b.submit("bad", broken)
        b.close()
        finished = dict(f for batch in b for f in batch.finished)
    assert finished["ok"] is None
    assert isinstance(finished["bad"], ValueError)


def test_queue_is_bounded() -> None:
    produced = 0

    def endless() -> Iterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    b = Batcher[int](2, queue_clips=4)
    b.submit("x", endless)
    it = iter(b)
    next(it)
    threading.Event().wait(0.3)
    assert produced <= 2 + 4 + 1  # one batch taken, the queue full, one blocked in put
    b.stop()


def test_bad_batch_size_and_closed_batcher() -> None:
    with pytest.raises(ValueError):
        Batcher[int](0)
    with Batcher[int](1) as b:
        b.close()
        with pytest.raises(RuntimeError):
            b.submit("x", lambda: [])
        assert list(b) == []


def test_a_lone_source_is_not_held_back_by_max_wait() -> None:
    # 3 clips, room for 8: once the source ends and nothing else is being read, the partial
    # batch goes at once instead of after max_wait (which would be every short video's fate)
    with Batcher[int](8, max_wait=30) as batcher:
        batcher.submit("a", lambda: [1, 2, 3])
        began = time.monotonic()
        batch = next(iter(batcher))
        assert [c for _, c in batch.clips] == [1, 2, 3] and batch.finished == [("a", None)]
        assert time.monotonic() - began < 10


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux")
def test_producers_run_at_lower_priority_than_the_consumer() -> None:
    seen: list[int] = []
    base = _nice()
    with Batcher[int](2, producers=2, producer_nice=5) as b:
        b.submit("a", lambda: seen.append(_nice()) or [1])
        b.submit("b", lambda: seen.append(_nice()) or [2])
        b.close()
        assert sum(len(x.clips) for x in b) == 2
    assert seen == [min(19, base + 5)] * 2
    assert _nice() == base  # the consumer (this thread) keeps its priority


def test_producer_nice_cannot_raise_priority() -> None:
    with pytest.raises(ValueError, match="producer_nice"):
        Batcher[int](2, producer_nice=-1)


@pytest.mark.timeout(20)  # a dead producer hangs the batcher
def test_a_refused_priority_change_does_not_stop_the_producers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    monkeypatch.setattr(sys, "platform", "linux")
    with Batcher[int](2, producers=2, producer_nice=5, max_wait=5.0) as b:
        b.submit("a", lambda: [1, 2, 3])
        b.close()
        assert [c for x in b for _, c in x.clips] == [1, 2, 3]
