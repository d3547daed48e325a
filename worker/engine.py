"""The inference engine of a worker process: one warm model, one shared batcher, many videos.

Every indexing job running in the process (Celery runs jobs on threads) submits its video here.
Producer threads decode clips from all submitted videos into one bounded queue and a single
inference thread packs them into batches of B, whatever video they come from: many short videos
keep the device as busy as one long one. Each job waits on its own ``IndexRequest``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from worker.tsm.meta import ModelMeta
from worker.video.batching import Batcher
from worker.video.pipeline import (
    Predictor,
    VideoIndex,
    _Clip,
    _clip_source,
    _finish,
    _Job,
)


class JobCancelled(Exception):
    """The caller withdrew the video (it was deleted) while it was being indexed."""


@dataclass
class IndexRequest:
    """A video in flight: its result future and how far the model has got through it."""

    path: str
    window: float
    stride: float
    top_k: int
    threshold: float
    job: _Job
    future: Future[VideoIndex] = field(default_factory=Future)

    @property
    def seconds_done(self) -> float:
        return self.job.clips[-1][1] if self.job.clips else 0.0

    @property
    def duration(self) -> float | None:
        return self.job.timeline.duration if self.job.timeline is not None else None


class IndexEngine:
    """Shared batching over a predictor. Thread-safe ``submit``; ``close`` stops the threads."""

    def __init__(
        self,
        predictor: Predictor,
        meta: ModelMeta,
        *,
        batch_size: int,
        producers: int = 2,
        max_wait: float = 0.05,
    ) -> None:
        self.predictor = predictor
        self.meta = meta
        self.batch_size = batch_size
        self._batcher = Batcher[_Clip](batch_size, producers=producers, max_wait=max_wait)
        self._requests: dict[str, IndexRequest] = {}
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.busy_seconds = 0.0  # time spent inside the predictor: 1 - busy/elapsed is idle
        self.batches = 0
        self.clips = 0
        self._thread = threading.Thread(target=self._run, name="vcat-infer", daemon=True)
        self._thread.start()

    def submit(
        self,
        path: Path | str,
        *,
        window: float | None = None,
        stride: float | None = None,
        top_k: int = 5,
        threshold: float = 0.5,
        thumbnails: bool = False,
        cancelled: Callable[[], bool] | None = None,
    ) -> IndexRequest:
        meta = self.meta
        window = meta.window_seconds if window is None else window
        stride = meta.stride_seconds if stride is None else stride
        if not window > 0 or not stride > 0:
            raise ValueError(f"window and stride must be > 0, got {window} and {stride}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        request = IndexRequest(
            str(path), window, stride, min(top_k, meta.num_classes), threshold, _Job(str(path))
        )
        key = uuid.uuid4().hex
        with self._lock:
            self._requests[key] = request
        source = partial(_clip_source, request.job, meta, window, stride, thumbnails)

        def stop_early() -> bool:  # withdrawn by the caller, or already failed in a batch
            return request.future.done() or (cancelled is not None and cancelled())

        self._batcher.submit(key, partial(_cancellable, source, stop_early))
        return request

    def index(self, path: Path | str, **options: object) -> VideoIndex:
        """Submit and wait (for callers that index one video at a time)."""
        return self.submit(path, **options).future.result()  # type: ignore[arg-type]

    def idle_fraction(self) -> float:
        elapsed = time.monotonic() - self.started
        return 1.0 - self.busy_seconds / elapsed if elapsed > 0 else 1.0

    def close(self) -> None:
        self._batcher.stop()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        for batch in self._batcher:
            if batch.clips:
                self._infer(batch.clips)
            for key, error in batch.finished:
                with self._lock:
                    request = self._requests.pop(str(key), None)
                if request is None or request.future.done():
                    continue
                if error is not None:
                    request.future.set_exception(error)
                    continue
                try:
                    result = _finish(
                        request.job, self.meta, request.window, request.stride,
                        request.top_k, request.threshold,
                    )  # fmt: skip
                except Exception as exc:
                    request.future.set_exception(exc)
                else:
                    request.future.set_result(result)

    def _infer(self, clips: list[tuple[object, _Clip]]) -> None:
        x = torch.from_numpy(np.stack([c.frames.frames for _, c in clips]))
        began = time.monotonic()
        try:
            with torch.inference_mode():
                logits = self.predictor(x).detach().to("cpu", torch.float32).numpy()
            if logits.shape != (len(clips), self.meta.num_classes):
                raise RuntimeError(
                    f"predictor returned {logits.shape}, expected "
                    f"({len(clips)}, {self.meta.num_classes})"
                )
        except Exception as exc:  # fail the videos in this batch, keep serving the others
            with self._lock:
                failed = {self._requests[str(k)] for k, _ in clips if str(k) in self._requests}
            for request in failed:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        finally:
            self.busy_seconds += time.monotonic() - began
        self.batches += 1
        self.clips += len(clips)
        with self._lock:
            requests = [self._requests.get(str(k)) for k, _ in clips]
        for owner, (_, clip), row in zip(requests, clips, logits, strict=True):
            if owner is None or owner.future.done():
                continue
            job, frames = owner.job, clip.frames
            job.clips.append((frames.window.start, frames.end, frames.frame_times))
            job.thumbs.append(clip.thumbnail)
            job.logits.append(row[None])


def _cancellable(
    source: Callable[[], Iterator[_Clip]], cancelled: Callable[[], bool]
) -> Iterator[_Clip]:
    for clip in source():
        if cancelled():
            raise JobCancelled("the video was withdrawn while indexing")
        yield clip
