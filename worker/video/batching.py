"""Pack clips from one or several videos into batches, decoding concurrently with inference.

Producer threads (PyAV releases the GIL while decoding and scaling) put clips into a bounded
queue; the consumer (the thread running the model) takes them out in batches of B. The bound
keeps memory flat however long the videos are; the threads keep the model fed while it runs.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

ClipT = TypeVar("ClipT")
log = logging.getLogger(__name__)

_POLL = 0.1  # seconds between checks for shutdown while blocked


@dataclass
class Batch(Generic[ClipT]):
    """Up to B clips (each tagged with its source key) and the sources finished so far.

    A key appears in ``finished`` only in (or after) the batch holding its last clip; the error is
    None when the source ended normally.
    """

    clips: list[tuple[Hashable, ClipT]]
    finished: list[tuple[Hashable, BaseException | None]] = field(default_factory=list)


@dataclass
class _Done:
    key: Hashable
    error: BaseException | None


class Batcher(Generic[ClipT]):
    """Shared batcher: ``submit`` clip sources, iterate ``Batch`` es, ``close`` when done adding.

    ``max_wait`` flushes a partial batch when no clip arrived for that long; a partial batch goes
    at once when its last source ended and no other is being read, so a lone short video is not
    held back waiting for others. ``producer_nice`` lowers the producer threads' priority, for a
    consumer that is the critical path on the same CPUs (the queue absorbs the producers' delays;
    nothing absorbs the consumer's). Use as a context manager so threads stop on errors.
    """

    def __init__(
        self,
        batch_size: int,
        *,
        producers: int = 1,
        queue_clips: int | None = None,
        max_wait: float = 0.5,
        producer_nice: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if producer_nice < 0:
            raise ValueError(f"producer_nice must be >= 0, got {producer_nice}")
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.producer_nice = producer_nice
        self._clips: queue.Queue[tuple[Hashable, ClipT] | _Done] = queue.Queue(
            maxsize=queue_clips or 2 * batch_size
        )
        self._sources: queue.Queue[tuple[Hashable, Callable[[], Iterable[ClipT]]] | None] = (
            queue.Queue()
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._submitted = 0
        self._finished = 0
        self._reading = 0  # sources a producer is in the middle of
        self._closed = False
        self._threads = [
            threading.Thread(target=self._produce, name=f"vcat-decode-{i}", daemon=True)
            for i in range(max(1, producers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, clips: Callable[[], Iterable[ClipT]]) -> None:
        """Queue a source; ``clips()`` runs on a producer thread (open files there, not here)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._submitted += 1
        self._sources.put((key, clips))

    def close(self) -> None:
        """No more sources: iteration ends once everything submitted is through."""
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._sources.put(None)

    def stop(self) -> None:
        self._stop.set()
        self.close()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Batcher[ClipT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _put(self, item: tuple[Hashable, ClipT] | _Done) -> bool:
        while not self._stop.is_set():
            try:
                self._clips.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        lower_thread_priority(self.producer_nice)
        while not self._stop.is_set():
            source = self._sources.get()
            if source is None:
                return
            key, make = source
            error: BaseException | None = None
            with self._lock:
                self._reading += 1
            try:
                for clip in make():
                    if not self._put((key, clip)):
                        return
            except Exception as exc:  # reported to the consumer with its source key
                error = exc
            finally:
                with self._lock:
                    self._reading -= 1
            if not self._put(_Done(key, error)):
                return

    def _idle(self) -> bool:
        """No clip waiting and none being read: nothing would join a partial batch soon."""
        with self._lock:
            return self._reading == 0 and self._clips.empty() and self._sources.empty()

    def _all_done(self) -> bool:
        with self._lock:
            return self._closed and self._finished == self._submitted

    def __iter__(self) -> Iterator[Batch[ClipT]]:
        batch: Batch[ClipT] = Batch([])
        while True:
            if self._all_done() and self._clips.empty():
                if batch.clips or batch.finished:
                    yield batch
                return
            try:
                item = self._clips.get(timeout=self.max_wait if batch.clips else _POLL)
            except queue.Empty:
                if batch.clips:
                    yield batch
                    batch = Batch([])
                continue
            if isinstance(item, _Done):
                with self._lock:
                    self._finished += 1
                batch.finished.append((item.key, item.error))
                if not batch.clips or self._idle():
                    yield batch
                    batch = Batch([])
                continue
            batch.clips.append(item)
            if len(batch.clips) >= self.batch_size:
                yield batch
                batch = Batch([])


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux: nice is per thread; any
    user may lower a thread's priority). Elsewhere a no-op: there it would apply to the whole
    process, the consumer included."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:  # a sandbox that forbids it: run on at equal priority, never die
        log.warning("could not lower the priority of thread %d: %s", tid, exc)
