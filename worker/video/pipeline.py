"""Index videos: decode sampled clips, run the model in batches, top-k labels and segments.

The model enters only as a ``predictor``: uint8 clips ``(N, T, H, W, 3)`` RGB at the model's
input size in, averaged logits ``(N, K)`` out (``worker.tsm.fast.make_predictor`` builds one).
Everything else comes from ``ModelMeta``, so tests can use a fake predictor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from worker.tsm.meta import ModelMeta
from worker.video.batching import Batcher
from worker.video.decode import ClipFrames, DecodeStats, Timeline, iter_clips, scan_timeline
from worker.video.errors import VideoError
from worker.video.probe import VideoInfo, probe_video
from worker.video.sampling import plan_windows
from worker.video.segments import Segment, find_segments
from worker.video.thumbnails import encode_jpeg

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


def _clips(
    job: _Job, meta: ModelMeta, window: float, stride: float, thumbnails: bool
) -> Iterator[_Clip]:
    job.info = probe_video(job.path)
    job.timeline = timeline = scan_timeline(job.path)
    declared = job.info.duration
    if timeline.read_error or (
        declared is not None and declared > timeline.duration + TRUNCATION_SLACK
    ):
        job.warnings.append(
            f"file looks truncated: header says {declared or 0:.2f}s, "
            f"data ends at {timeline.duration:.2f}s; indexed what is there"
        )
    windows = plan_windows(timeline.duration, window, stride, meta.num_segments)
    sizes = (meta.resize_short, meta.input_size)
    for clip in iter_clips(job.path, windows, sizes, timeline.origin, job.stats):
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
    window = meta.window_seconds if window is None else window
    stride = meta.stride_seconds if stride is None else stride
    if not window > 0 or not stride > 0:
        raise ValueError(f"window and stride must be > 0, got {window} and {stride}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    top_k = min(top_k, meta.num_classes)
    jobs: dict[str, _Job] = {}
    with Batcher[_Clip](batch_size, producers=producers) as batcher:
        for p in paths:
            key = str(p)
            if key in jobs:
                continue  # the same file twice gives the same result: index it once
            job = jobs[key] = _Job(key)
            batcher.submit(key, partial(_clip_source, job, meta, window, stride, thumbnails))
        batcher.close()
        for batch in batcher:
            if batch.clips:
                x = torch.from_numpy(np.stack([c.frames.frames for _, c in batch.clips]))
                with torch.inference_mode():
                    logits = predictor(x).detach().to("cpu", torch.float32).numpy()
                if logits.shape != (len(batch.clips), meta.num_classes):
                    raise RuntimeError(
                        f"predictor returned {logits.shape}, expected "
                        f"({len(batch.clips)}, {meta.num_classes})"
                    )
                for (source, clip), row in zip(batch.clips, logits, strict=True):
                    job = jobs[str(source)]
                    f = clip.frames
                    job.clips.append((f.window.start, f.end, f.frame_times))
                    job.thumbs.append(clip.thumbnail)
                    job.logits.append(row[None])
                    if on_progress is not None and job.timeline is not None:
                        on_progress(Progress(job.path, clip.frames.end, job.timeline.duration, 1))
            for source, error in batch.finished:
                job = jobs.pop(str(source))
                if error is None:
                    try:
                        yield _finish(job, meta, window, stride, top_k, threshold)
                    except VideoError as exc:
                        yield exc
                elif isinstance(error, VideoError):
                    yield error
                else:
                    raise error


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
