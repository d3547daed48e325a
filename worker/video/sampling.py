"""Clip windows in seconds and the frame times sampled inside them; pure arithmetic, no decoding.

A window of ``length`` seconds is split into T equal segments and the frame shown at each
segment's centre is sampled (TSM's test-time rule, by timestamp instead of frame index, so
variable frame rates are exact). Windows start every ``stride`` seconds; one extra window ending
exactly at the end of the video covers the tail, and a video shorter than one window gives a
single clip over the whole video.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcat.tasks import CLIP_SECONDS_MAX, CLIP_SECONDS_MIN

# Time comparisons tolerate float noise far below any real frame interval.
EPS = 1e-9
MAX_WINDOWS = 200_000  # clips per video: 69 hours at the default stride of 1.25 s


@dataclass(frozen=True)
class Window:
    index: int
    start: float
    end: float
    times: tuple[float, ...]  # sampled timestamps (seconds from the first frame), increasing


def segment_centres(start: float, end: float, num_frames: int) -> tuple[float, ...]:
    length = end - start
    return tuple(start + (2 * i + 1) * length / (2 * num_frames) for i in range(num_frames))


def plan_windows(duration: float, window: float, stride: float, num_frames: int) -> list[Window]:
    """All clip windows for a video of ``duration`` seconds, in start order."""
    if not duration > 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    for name, value in (("window", window), ("stride", stride)):
        if not CLIP_SECONDS_MIN <= value <= CLIP_SECONDS_MAX:  # NaN fails this too
            raise ValueError(
                f"{name} must be between {CLIP_SECONDS_MIN:g} and {CLIP_SECONDS_MAX:g} s, "
                f"got {value}"
            )
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if (duration - window) / stride + 2 > MAX_WINDOWS:  # an upper bound on the count below
        raise ValueError(
            f"more than {MAX_WINDOWS:,} clips: a stride of {stride:g} s is too small for "
            f"{duration:.0f} s of video"
        )
    if duration <= window + EPS:
        return [Window(0, 0.0, duration, segment_centres(0.0, duration, num_frames))]
    starts: list[float] = []
    k = 0
    while k * stride + window <= duration + EPS:
        starts.append(k * stride)  # multiply, never accumulate: no drift on long videos
        k += 1
    if starts[-1] + window < duration - EPS:
        starts.append(duration - window)
    return [
        Window(i, s, s + window, segment_centres(s, s + window, num_frames))
        for i, s in enumerate(starts)
    ]


def frame_for_time(frame_times: list[float], target: float) -> int:
    """Index of the frame on screen at ``target``: the last one starting at or before it.

    Times before the first frame map to the first frame. Reference implementation of the rule
    the streaming decoder applies; tests use it to compute expected samples.
    """
    lo, hi = 0, len(frame_times)
    while lo < hi:
        mid = (lo + hi) // 2
        if frame_times[mid] <= target + EPS:
            lo = mid + 1
        else:
            hi = mid
    return max(0, lo - 1)
