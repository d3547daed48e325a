"""Index videos: decode sampled clips, run the model in batches, top-k labels and segments.

``IndexEngine`` is the machinery: producer threads decode clips from every submitted video into
one bounded queue and a single inference thread packs them into batches of B, whatever video they
come from, so many short videos keep the device as busy as one long one. ``index_videos`` runs one
for a list of files; a worker process keeps one per model for all its jobs.

The model enters only as a ``predictor``: uint8 clips ``(N, T, H, W, 3)`` RGB at the model's
input size in, averaged logits ``(N, K)`` out (``worker.tsm.fast.make_predictor`` builds one).
Everything else comes from ``ModelMeta``, so tests can use a fake predictor.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from worker.tsm.meta import ModelMeta
from worker.video.batching import Batcher
from worker.video.decode import ClipFrames, DecodeStats, ScannedVideo, Timeline
from worker.video.errors import VideoError
from worker.video.probe import VideoInfo
from worker.video.sampling import plan_windows
from worker.video.segments import Segment, find_segments
from worker.video.thumbnails import encode_jpeg

log = logging.getLogger(__name__)
Predictor = Callable[[torch.Tensor], torch.Tensor]
ROUND = 6  # decimals kept in JSON: stable across runs and platforms' float printing
TRUNCATION_SLACK = 0.5  # seconds a header may overstate the data before we call it truncated


@dataclass
class ClipResult:
    index: int
    start: float
    end: float
    top: list[tuple[str, float]]  # (label, probability), best first
    frame_times: tuple[float, ...]  # start times of the sampled frames
    thumbnail: bytes | None = None  # JPEG of the middle sampled frame

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": round(self.start, ROUND),
            "end": round(self.end, ROUND),
            "top": [{"label": lab, "prob": round(p, ROUND)} for lab, p in self.top],
        }


@dataclass
class VideoIndex:
    path: str
    info: VideoInfo
    model: str
    window: float
    stride: float
    duration: float  # from the first frame's start to the last frame's end
    clips: list[ClipResult]
    segments: list[Segment]
    threshold: float
    warnings: list[str] = field(default_factory=list)
    probs: np.ndarray | None = None  # (clips, labels) softmax scores, for callers that want all

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "model": self.model,
            "window": self.window,
            "stride": self.stride,
            "threshold": self.threshold,
            "duration": round(self.duration, ROUND),
            "video": self.info.to_dict(),
            "clips": [c.to_dict() for c in self.clips],
            "segments": [
                {k: round(v, ROUND) if isinstance(v, float) else v for k, v in s.to_dict().items()}
                for s in self.segments
            ],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Progress:
    path: str
    seconds_done: float  # end of the latest finished clip
    duration: float
    clips_done: int


@dataclass
class _Clip:
    frames: ClipFrames
    thumbnail: bytes | None


@dataclass
class _Job:
    path: str
    info: VideoInfo | None = None
    timeline: Timeline | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    logits: list[np.ndarray] = field(default_factory=list)
    # (start, end, sampled frame times) per finished clip; the pixels are never kept
    clips: list[tuple[float, float, tuple[float, ...]]] = field(default_factory=list)
    thumbs: list[bytes | None] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _clip_source(
    job: _Job, meta: ModelMeta, window: float, stride: float, thumbnails: bool
) -> Iterator[_Clip]:
    """Runs on a producer thread: probe, find the exact timeline, then stream the clips."""
    try:
        yield from _clips(job, meta, window, stride, thumbnails)
    except av.FFmpegError as exc:  # anything FFmpeg rejects past the probe is still bad input
        raise VideoError(job.path, "unreadable", str(exc)) from None
    except (VideoError, JobCancelled):
        raise
    except Exception as exc:  # a file that trips a bug of ours fails alone, not the whole run
        log.exception("unexpected error while decoding %s", job.path)
        raise VideoError(job.path, "unreadable", f"{type(exc).__name__}: {exc}") from None


def _clips(
    job: _Job, meta: ModelMeta, window: float, stride: float, thumbnails: bool
) -> Iterator[_Clip]:
    with ScannedVideo(job.path) as video:
        job.info, job.timeline = video.info, video.timeline
        timeline = job.timeline
        declared = job.info.duration
        if timeline.read_error or (
            declared is not None and declared > timeline.duration + TRUNCATION_SLACK
        ):
            job.warnings.append(
                f"file looks truncated: header says {declared or 0:.2f}s, "
                f"data ends at {timeline.duration:.2f}s; indexed what is there"
            )
        try:
            windows = plan_windows(timeline.duration, window, stride, meta.num_segments)
        except ValueError as exc:
            raise VideoError(job.path, "bad_options", str(exc)) from None
        for clip in video.clips(windows, (meta.resize_short, meta.input_size), job.stats):
            thumb = encode_jpeg(clip.frames[len(clip.frames) // 2]) if thumbnails else None
            yield _Clip(clip, thumb)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _finish(
    job: _Job, meta: ModelMeta, window: float, stride: float, top_k: int, threshold: float
) -> VideoIndex:
    assert job.info is not None and job.timeline is not None
    if not job.clips:
        raise VideoError(job.path, "no_frames")
    probs = _softmax(np.concatenate(job.logits))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    clips = [
        ClipResult(
            index=i,
            start=start,
            end=end,
            top=[(meta.labels[k], float(probs[i, k])) for k in order[i]],
            frame_times=times,
            thumbnail=job.thumbs[i],
        )
        for i, (start, end, times) in enumerate(job.clips)
    ]
    starts = [c.start for c in clips]
    ends = [c.end for c in clips]
    return VideoIndex(
        path=job.path,
        info=job.info,
        model=meta.name,
        window=window,
        stride=stride,
        duration=job.timeline.duration,
        clips=clips,
        segments=find_segments(probs, starts, ends, meta.labels, threshold),
        threshold=threshold,
        warnings=job.warnings + job.stats.warnings,
        probs=probs,
    )


def index_videos(
    paths: Iterable[Path | str],
    predictor: Predictor,
    meta: ModelMeta,
    *,
    window: float | None = None,
    stride: float | None = None,
    top_k: int = 5,
    threshold: float = 0.5,
    thumbnails: bool = False,
    batch_size: int = 8,
    producers: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
) -> Iterator[VideoIndex | VideoError]:
    """Index several videos through one shared batcher (clips of different videos share batches).

    Yields one ``VideoIndex`` per readable file and one ``VideoError`` per bad file, in the order
    they finish. Exceptions other than VideoError (a broken model, a bug) propagate.
    """
    engine = IndexEngine(predictor, meta, batch_size=batch_size, producers=producers, max_wait=0.5)
    try:
        requests = [
            engine.submit(
                p,
                window=window,
                stride=stride,
                top_k=top_k,
                threshold=threshold,
                thumbnails=thumbnails,
                on_progress=on_progress,
            )
            for p in dict.fromkeys(str(p) for p in paths)  # the same file twice: index it once
        ]
        for future in as_completed(r.future for r in requests):
            error = future.exception()
            if error is None:
                yield future.result()
            elif isinstance(error, VideoError):
                yield error
            else:
                raise error
    finally:
        engine.close()


def index_video(
    path: Path | str,
    predictor: Predictor,
    meta: ModelMeta,
    *,
    window: float | None = None,
    stride: float | None = None,
    top_k: int = 5,
    threshold: float = 0.5,
    thumbnails: bool = False,
    batch_size: int = 8,
    on_progress: Callable[[Progress], None] | None = None,
) -> VideoIndex:
    """Index one video; raises ``VideoError`` for a bad file."""
    (result,) = index_videos(
        [path],
        predictor,
        meta,
        window=window,
        stride=stride,
        top_k=top_k,
        threshold=threshold,
        thumbnails=thumbnails,
        batch_size=batch_size,
        on_progress=on_progress,
    )
    if isinstance(result, VideoError):
        raise result
    return result


class JobCancelled(Exception):
    """The caller withdrew the video (it was deleted) while it was being indexed."""


@dataclass(eq=False)  # identity semantics: requests go in sets
class IndexRequest:
    """A video in flight: its result future and how far the model has got through it."""

    path: str
    window: float
    stride: float
    top_k: int
    threshold: float
    job: _Job
    on_progress: Callable[[Progress], None] | None = None
    future: Future[VideoIndex] = field(default_factory=Future)

    @property
    def seconds_done(self) -> float:
        return self.job.clips[-1][1] if self.job.clips else 0.0

    @property
    def duration(self) -> float | None:
        return self.job.timeline.duration if self.job.timeline is not None else None


@cache
def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (``MALLOC_ARENA_MAX``) for this process.

    Decode threads each churn through frame-sized buffers; with glibc's default of 8 arenas per
    core the freed memory stays fragmented across arenas and RSS grew about 11 MiB per minute of
    720p video (60 min: 1350 MiB against 659 for 1 min; capped at 2 arenas: 824 MiB). A no-op
    off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


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
        decode_nice: int = 0,
    ) -> None:
        _limit_malloc_arenas()
        self.predictor = predictor
        self.meta = meta
        self.batch_size = batch_size
        self._batcher = Batcher[_Clip](
            batch_size, producers=producers, max_wait=max_wait, producer_nice=decode_nice
        )
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
        on_progress: Callable[[Progress], None] | None = None,
    ) -> IndexRequest:
        """Queue a video; ``on_progress`` runs on the inference thread after each of its clips."""
        meta = self.meta
        window = meta.window_seconds if window is None else window
        stride = meta.stride_seconds if stride is None else stride
        if not window > 0 or not stride > 0:
            raise ValueError(f"window and stride must be > 0, got {window} and {stride}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        request = IndexRequest(
            str(path), window, stride, min(top_k, meta.num_classes), threshold, _Job(str(path)),
            on_progress,
        )  # fmt: skip
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
                try:
                    self._infer(batch.clips)
                except Exception as exc:  # fail this batch's videos; the thread serves on
                    self._fail([key for key, _ in batch.clips], exc)
            for key, error in batch.finished:
                self._complete(str(key), error)

    def _fail(self, keys: list[object], error: BaseException) -> None:
        with self._lock:
            failed = {self._requests[str(k)] for k in keys if str(k) in self._requests}
        for request in failed:
            if not request.future.done():
                request.future.set_exception(error)

    def _complete(self, key: str, error: BaseException | None) -> None:
        with self._lock:
            request = self._requests.pop(key, None)
        if request is None or request.future.done():
            return
        if error is not None:
            request.future.set_exception(error)
            return
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
        finally:
            self.busy_seconds += time.monotonic() - began
        if logits.shape != (len(clips), self.meta.num_classes):
            raise RuntimeError(
                f"predictor returned {logits.shape}, expected "
                f"({len(clips)}, {self.meta.num_classes})"
            )
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
            if owner.on_progress is not None and job.timeline is not None:
                owner.on_progress(Progress(job.path, frames.end, job.timeline.duration, 1))


def _cancellable(
    source: Callable[[], Iterator[_Clip]], cancelled: Callable[[], bool]
) -> Iterator[_Clip]:
    if cancelled():  # withdrawn while it waited for a decoder: not even probed
        raise JobCancelled("the video was withdrawn before decoding began")
    for clip in source():
        if cancelled():
            raise JobCancelled("the video was withdrawn while indexing")
        yield clip
