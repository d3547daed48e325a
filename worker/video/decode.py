"""Streaming decode with PyAV: sampled frames only, converted once, straight to model input size.

Frames are decoded sequentially (threads by frame size: ``_decode_threads``), never held beyond
a one-frame lookahead; only the frames a clip window samples go through libswscale, in one pass
from the decoder's pixel format to RGB at the resized size, then rotation and a centre crop on
the small array.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from worker.video.errors import VideoError
from worker.video.probe import (
    PROBE_DECODE_PACKETS,
    VideoInfo,
    describe,
    ffmpeg_reason,
    first_frame_rotation,
    open_video,
    single_threaded,
)
from worker.video.sampling import EPS, Window


@dataclass(frozen=True)
class Timeline:
    """Where a stream's frames lie, from a demux-only pass (no decoding)."""

    origin: Fraction  # pts of the first frame, in seconds: time 0 of every clip
    duration: float  # from the first frame's start to the last frame's end
    packets: int
    read_error: str | None  # demuxing stopped early (a truncated or damaged file)
    # every packet's pts (stream time base), sorted; None when some packet has none
    pts: array[int] | None = None
    # (byte position, pts, dts) of the first packet read: where a rewind must land
    first_packet: tuple[int | None, int | None, int | None] | None = None
    order: DecodeOrder | None = None  # None when some packet has no pts, or not H.264


@dataclass(frozen=True)
class DecodeOrder:
    """Every packet's pts in decode order, and those of the packets where decoding starts
    afresh (H.264 IDR pictures): no frame after one refers to a frame before it."""

    pts: array[int]
    restarts: frozenset[int]


# swscale on the calling thread. PyAV's default (0) starts a thread per core for every context
# (one per video here) and hands each frame's slices to them: for a model-sized output that
# cost more than it saved (320x240 -> 85x64: 0.15 against 0.07 ms of CPU a frame; even from
# 1080p: 0.64 against 0.56 ms of CPU, 0.48 against 0.56 ms of wall time), and under load each
# hand-off waited for a core. The output was the same, bit for bit, in every size checked.
SWSCALE_THREADS = 1


@dataclass(frozen=True)
class Geometry:
    """How a coded frame becomes a ``crop`` x ``crop`` upright RGB image."""

    scaled_width: int  # swscale output size, coded orientation
    scaled_height: int
    rot_k: int  # np.rot90 turns (counter-clockwise) applied after scaling
    crop: int
    # One swscale context per video: ``frame.to_ndarray(width=...)`` builds a new one per call,
    # which cost 5 ms a frame against 0.15 ms reused (PyAV 18, 320x240 -> 85x64).
    sws: VideoReformatter = field(default_factory=VideoReformatter, compare=False, repr=False)

    def apply(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = self.sws.reformat(
            frame,
            width=self.scaled_width,
            height=self.scaled_height,
            format="rgb24",
            interpolation="BILINEAR",
            threads=SWSCALE_THREADS,
        ).to_ndarray()
        y0 = (self.scaled_height - self.crop) // 2
        x0 = (self.scaled_width - self.crop) // 2
        out = rgb[y0 : y0 + self.crop, x0 : x0 + self.crop]
        if self.rot_k:
            out = np.rot90(out, self.rot_k)
        return np.ascontiguousarray(out)


def plan_geometry(
    coded_width: int, coded_height: int, rotation: int, resize_short: int, crop: int
) -> Geometry:
    """Resize the short side to ``resize_short`` (aspect kept), centre-crop ``crop``."""
    if crop > resize_short:
        raise ValueError(f"crop {crop} is larger than resize_short {resize_short}")
    short = min(coded_width, coded_height)
    scaled_w = max(crop, round(coded_width * resize_short / short))
    scaled_h = max(crop, round(coded_height * resize_short / short))
    # Centre crop and a quarter turn commute for a square crop, so crop first (less to rotate).
    return Geometry(scaled_w, scaled_h, (rotation // 90) % 4, crop)


def scan_timeline(path: Path | str) -> Timeline:
    """Exact start and end of the first video stream, from packet timestamps only."""
    container, stream = open_video(path)
    with container:
        return _scan(path, container, stream, probe=False)[1]


def _scan(
    path: Path | str,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    probe: bool,
) -> tuple[VideoInfo | None, Timeline]:
    if probe:
        single_threaded(stream)
    tb = stream.time_base or Fraction(1, 90000)
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    first: int | None = None
    end: int | None = None
    count = 0
    error = None
    rotation: int | None = None
    all_pts: array[int] | None = array("q")  # decode order
    restarts: set[int] | None = set() if stream.codec_context.name == "h264" else None
    length_size = _nal_length_size(stream)
    first_packet = None
    try:
        for n, packet in enumerate(container.demux(stream)):
            # Probing decodes up to the first frame (the empty end-of-stream packet flushes
            # a decoder's delayed frames), as probe_video does.
            if probe and rotation is None and n <= PROBE_DECODE_PACKETS:
                rotation = first_frame_rotation(packet)
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if first_packet is None:
                first_packet = (packet.pos, packet.pts, packet.dts)
            count += 1
            dur = packet.duration or round(1 / (rate * tb))
            # No timestamps (raw elementary streams): frames follow each other back to back,
            # exactly as the decoder side numbers them (see iter_clips).
            if all_pts is not None:
                if packet.pts is None:
                    all_pts = None
                else:
                    all_pts.append(packet.pts)
                    if (
                        restarts is not None
                        and packet.is_keyframe
                        and _has_idr(bytes(packet), length_size)
                    ):
                        restarts.add(packet.pts)
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:
                pts = end or 0
            first = pts if first is None else min(first, pts)
            end = pts + dur if end is None else max(end, pts + dur)
    except av.FFmpegError as exc:
        if probe and rotation is None:
            raise VideoError(path, "unreadable", ffmpeg_reason(exc)) from None
        error = str(exc)
    info = describe(path, container, stream, rotation) if probe else None
    if first is None or end is None:
        raise VideoError(path, "no_frames", "no video packets")
    if stream.start_time is not None:
        first = max(first, stream.start_time)
    if end <= first:
        raise VideoError(path, "no_frames", "no video packet after the stream's start time")
    sorted_pts = array("q", sorted(all_pts)) if all_pts is not None else None
    order = None
    if all_pts is not None and restarts and len(set(all_pts)) == len(all_pts):
        order = DecodeOrder(all_pts, frozenset(restarts))  # (a repeated pts would be ambiguous)
    timeline = Timeline(
        first * tb, float((end - first) * tb), count, error, sorted_pts, first_packet, order
    )
    return info, timeline


def _nal_length_size(stream: av.VideoStream) -> int | None:
    """Bytes of each NAL unit's length prefix in H.264 packets (MP4, MKV: from the avcC
    header), or None for Annex B start codes (MPEG-TS, raw streams)."""
    extra = stream.codec_context.extradata
    if extra and len(extra) > 4 and extra[0] == 1:
        return (extra[4] & 3) + 1
    return None


def _has_idr(data: bytes, length_size: int | None) -> bool:
    """Whether an H.264 access unit holds an IDR slice (NAL unit type 5). A keyframe without
    one (an open-GOP I picture) can be followed by frames that refer back past it."""
    if length_size is None:
        i = data.find(b"\x00\x00\x01")
        while 0 <= i < len(data) - 3:
            if data[i + 3] & 0x1F == 5:
                return True
            i = data.find(b"\x00\x00\x01", i + 3)
        return False
    i = 0
    while i + length_size < len(data):
        if data[i + length_size] & 0x1F == 5:
            return True
        i += length_size + int.from_bytes(data[i : i + length_size], "big")
    return False


class ScannedVideo:
    """A video opened once for both of the pipeline's passes: ``probe_video`` and
    ``scan_timeline`` in one demux (``info``, ``timeline``), then the decode, which rewinds the
    same container instead of opening the file again (an open was 0.7 of the 1.9 ms that a 4 s
    320x240 H.264 MP4 cost before its first clip)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._container, self._stream = open_video(path)
        try:
            info, self.timeline = _scan(path, self._container, self._stream, probe=True)
        except BaseException:
            self._container.close()
            raise
        assert info is not None
        self.info = info
        self.reopened = False  # the decode had to open the file again (see ``_rewind``)

    def __enter__(self) -> ScannedVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.close()

    def clips(
        self, windows: list[Window], geometry_for: tuple[int, int], stats: DecodeStats | None
    ) -> Iterator[ClipFrames]:
        """``iter_clips`` with the scan's timeline (its origin, and every frame's pts)."""
        timeline = self.timeline
        packets = self._rewind()
        if packets is None:
            self.reopened = True
            self._container.close()
            yield from iter_clips(
                self.path, windows, geometry_for, timeline.origin, stats,
                frame_pts=timeline.pts, decode_order=timeline.order,
            )  # fmt: skip
            return
        yield from _sample(
            self.path, self._stream, packets, windows, geometry_for, timeline.origin, stats,
            timeline.pts, timeline.order,
        )  # fmt: skip

    def _rewind(self) -> Iterator[av.Packet] | None:
        """The stream's packets from the first again; None where that cannot be had exactly:
        the probe's decoder (one thread) is not the one ``iter_clips`` would choose (large
        frames), or the seek did not land on the very packet the scan read first (raw streams
        without timestamps, odd muxers). The seek also resets the decoder (FFmpeg flush)."""
        first = self.timeline.first_packet
        if _decode_threads(self._stream) != 1 or first is None:
            return None
        if first[0] is None or first[0] < 0:  # no byte position to prove where the seek landed
            return None
        target = first[2] if first[2] is not None else first[1]
        if target is None:
            return None
        try:
            self._container.seek(target, stream=self._stream, backward=True)
            packets = self._container.demux(self._stream)
            head = next(packets, None)
        except av.FFmpegError:
            return None
        if head is None or (head.pos, head.pts, head.dts) != first:
            return None
        return itertools.chain([head], packets)


@dataclass
class ClipFrames:
    """The T sampled frames of one window, ready for the model."""

    window: Window
    frames: np.ndarray  # (T, crop, crop, 3) uint8 RGB
    frame_times: tuple[float, ...]  # start time of each sampled frame, seconds
    end: float  # window end, clamped to the last decoded frame's end


@dataclass
class DecodeStats:
    frames_decoded: int = 0
    frames_converted: int = 0
    decode_errors: int = 0
    last_time: float = 0.0
    warnings: list[str] = field(default_factory=list)


SMALL_FRAME = 640 * 480  # pixels; up to this, one decode thread per video


def _decode_threads(stream: av.VideoStream) -> int:
    """FFmpeg's own choice (one thread per core) for large frames, 1 for small ones. Measured
    on 2 cores: 320x240 H.264 took 22-30% less CPU on one thread and no more wall time (frame
    threading's hand-offs cost more than a small frame's decode); 720p took 6% more CPU threaded
    but 20% less wall time for a lone video. This is for the engine, whose decoders share the
    cores with inference; training decodes clips one at a time with nothing beside it, and there
    FFmpeg's threads still win on 128x128 (7 against 8-10 ms of wall time per clip)."""
    ctx = stream.codec_context
    return 1 if 0 < ctx.width * ctx.height <= SMALL_FRAME else 0


def iter_clips(
    path: Path | str,
    windows: list[Window],
    geometry_for: tuple[int, int],
    origin: Fraction,
    stats: DecodeStats | None = None,
    threads: int = 0,
    frame_pts: Sequence[int] | None = None,
    decode_order: DecodeOrder | None = None,
) -> Iterator[ClipFrames]:
    """Decode ``path`` once and yield each window's frames as soon as the window is complete.

    ``geometry_for`` is ``(resize_short, crop)``. Each target time gets the frame on screen at
    that moment (the last frame starting at or before it). Windows past the last decodable frame
    are dropped; their absence is reported in ``stats.warnings``. ``threads``: decoder threads;
    0 chooses by frame size (``_decode_threads``).

    ``frame_pts`` (``Timeline.pts``): with every frame's timestamp known up front, the decoder
    skips the non-reference frames that no window samples (FFmpeg ``skip_frame=NONREF``, set per
    packet). Reference frames are always decoded, so the sampled frames are bit-identical; on
    x264 video about half the frames are skipped, a third less decoding time. With
    ``decode_order`` (``Timeline.order``) as well, the packets that no sampled frame depends on
    are not decoded either: those after the last sampled one before an IDR picture.
    """
    container, stream = open_video(path)
    with container:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads or _decode_threads(stream)
        packets = container.demux(stream)
        yield from _sample(
            path, stream, packets, windows, geometry_for, origin, stats, frame_pts, decode_order
        )


def _sample(
    path: Path | str,
    stream: av.VideoStream,
    packets: Iterator[av.Packet],
    windows: list[Window],
    geometry_for: tuple[int, int],
    origin: Fraction,
    stats: DecodeStats | None,
    frame_pts: Sequence[int] | None,
    decode_order: DecodeOrder | None = None,
) -> Iterator[ClipFrames]:
    """``iter_clips`` on an open stream, decoding ``packets`` (its packets, from the first)."""
    stats = stats if stats is not None else DecodeStats()
    resize_short, crop = geometry_for
    targets = sorted((t, w.index, i) for w in windows for i, t in enumerate(w.times))
    target_times = [t for t, _, _ in targets]
    by_index = {w.index: w for w in windows}
    slots: dict[int, list[np.ndarray | None]] = {}
    slot_times: dict[int, list[float]] = {}
    missing = {w.index: len(w.times) for w in windows}  # targets of each window not yet filled
    next_target = 0
    next_emit = 0  # windows are emitted in index order
    order = [w.index for w in windows]

    tb = stream.time_base or Fraction(1, 90000)
    seconds = _PtsClock(tb, origin)
    needed = _sampled_pts(frame_pts, target_times, seconds) if frame_pts else None
    unused = _unreferenced(decode_order, needed) if decode_order and needed else None
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    geometry: Geometry | None = None
    prev: tuple[float, av.VideoFrame] | None = None
    clock: int | Fraction = 0  # ``start`` of ``prev``

    def assign(upto: float, frame_time: float, frame: av.VideoFrame) -> bool:
        """Give ``frame`` to every pending target before ``upto``; whether any took it."""
        nonlocal next_target
        stop = bisect.bisect_left(target_times, upto - EPS, lo=next_target)
        if stop == next_target:
            return False
        assert geometry is not None
        rgb = geometry.apply(frame)
        stats.frames_converted += 1
        for _, w_index, i in targets[next_target:stop]:
            slots.setdefault(w_index, [None] * len(by_index[w_index].times))[i] = rgb
            slot_times.setdefault(w_index, [0.0] * len(by_index[w_index].times))[i] = frame_time
            missing[w_index] -= 1
        next_target = stop
        return True

    def full(w_index: int) -> list[np.ndarray] | None:
        if missing[w_index]:
            return None
        return cast(list[np.ndarray], slots.pop(w_index))

    def ready() -> Iterator[ClipFrames]:
        nonlocal next_emit
        while next_emit < len(order):
            w = by_index[order[next_emit]]
            got = full(w.index)
            if got is None:
                return
            yield ClipFrames(w, np.stack(got), tuple(slot_times.pop(w.index)), w.end)
            next_emit += 1

    for frame in _decode(packets, stream, stats, needed, unused):
        start: int | Fraction  # the frame's pts, or its exact time when it has none
        if frame.pts is not None:
            start = frame.pts
            t = seconds(start)
        else:
            if prev is None:
                start = Fraction(0)
            else:  # no timestamps: the previous frame's end (same rule as scan_timeline)
                begun = seconds.exact(clock) if isinstance(clock, int) else clock
                start = begun + (prev[1].duration * tb if prev[1].duration else 1 / rate)
            t = float(start)
        if prev is not None and t <= prev[0]:
            continue  # out-of-order or duplicate timestamp: keep the stream monotonic
        if geometry is None:
            geometry = plan_geometry(
                frame.width, frame.height, round(frame.rotation) % 360, resize_short, crop
            )
        stats.frames_decoded += 1
        # (targets before the first frame get the first frame)
        took = assign(t, t, frame) if prev is None else assign(t, *prev)
        prev, clock = (t, frame), start
        stats.last_time = t
        if took:  # only a frame given to some target can complete a window
            yield from ready()
            if next_target == len(targets):
                return  # everything sampled: stop decoding early
    if prev is None:
        raise VideoError(path, "no_frames")
    last_t, last_frame = prev
    last_end = last_t + float((last_frame.duration or 0) * tb)
    # Windows that start while the last frame is on screen take it for their remaining
    # targets; only those starting after it had ended lie past the data.
    pending = [by_index[i] for i in order[next_emit:]]
    live = [w for w in pending if w.start <= last_t + EPS or w.start < last_end - EPS]
    if live:
        assign(live[-1].times[-1] + 1.0, last_t, last_frame)
    dropped = len(pending) - len(live)
    for w in live:
        got = full(w.index)
        if got is None:
            continue
        times = tuple(slot_times.pop(w.index))
        end = w.end if w.end <= last_end + 1e-6 else max(last_end, times[-1])
        yield ClipFrames(w, np.stack(got), times, end)
    if dropped:
        stats.warnings.append(
            f"decoding stopped at {last_t:.2f}s; {dropped} clip(s) after it were skipped"
        )


class _PtsClock:
    """pts -> seconds after ``origin``: ``float(pts * time_base - origin)`` to the last bit, in
    integer arithmetic (Python divides ints with correct rounding, exactly as ``float`` of a
    Fraction does); 3 us a frame in Fractions against 0.3, on 15,000 frames in a 10-minute video"""

    def __init__(self, time_base: Fraction, origin: Fraction) -> None:
        # pts * n/d - on/od = (pts * n * od - on * d) / (d * od)
        self.scale = time_base.numerator * origin.denominator
        self.offset = origin.numerator * time_base.denominator
        self.denominator = time_base.denominator * origin.denominator

    def __call__(self, pts: int) -> float:
        return (pts * self.scale - self.offset) / self.denominator

    def exact(self, pts: int) -> Fraction:
        return Fraction(pts * self.scale - self.offset, self.denominator)


def _sampled_pts(
    frame_pts: Sequence[int], target_times: list[float], seconds: _PtsClock
) -> set[int]:
    """The pts of the frames on screen at the target times, and of their neighbours (so that a
    float rounding at a frame boundary can never pick a frame that was skipped); and the first
    and last frames."""
    times = [seconds(p) - EPS for p in frame_pts]
    needed = {frame_pts[0], frame_pts[-1]}  # the last frame's end closes the final window
    for t in target_times:
        i = max(0, bisect.bisect_right(times, t) - 1)
        needed.update(frame_pts[max(0, i - 1) : i + 2])
    return needed


def _unreferenced(order: DecodeOrder, needed: set[int]) -> set[int]:
    """Pts of the packets that no needed frame depends on: references point back in decode
    order and never past an IDR picture, so a packet is unused when no needed one follows it
    before the next IDR (or the end). An IDR is unused too when nothing up to the next needs
    it."""
    unused: set[int] = set()
    free = True  # no needed packet between here and the next restart, or the end
    for pts in reversed(order.pts):
        if pts in needed:
            free = False
        elif free:
            unused.add(pts)
        if pts in order.restarts:
            free = True
    return unused


def _decode(
    packets: Iterator[av.Packet],
    stream: av.VideoStream,
    stats: DecodeStats,
    needed: set[int] | None = None,
    unused: set[int] | None = None,
) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; corrupt packets are counted and skipped.
    ``needed``: pts of the frames wanted; other non-reference frames are not decoded, nor are
    the packets in ``unused`` (pts of packets that no wanted frame depends on)."""
    codec = stream.codec_context
    skipping = False
    try:
        for packet in packets:
            if unused and packet.pts in unused:
                continue
            if needed is not None:
                skip = packet.pts is not None and packet.pts not in needed
                if skip != skipping:
                    codec.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            try:
                frames = packet.decode()
            except av.FFmpegError:
                stats.decode_errors += 1
                continue
            yield from frames
    except av.FFmpegError as exc:  # demuxer gave up (truncated file): keep what decoded
        stats.warnings.append(f"read error after {stats.last_time:.2f}s: {exc}")
    if stats.decode_errors:
        stats.warnings.append(f"{stats.decode_errors} packet(s) failed to decode and were skipped")
