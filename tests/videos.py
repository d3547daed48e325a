"""Shared test-video factory: small real video files written with PyAV, and broken inputs.

Everything is deterministic (same arguments, same bytes), so tests can reason about content.
The default pattern is a textured background with a red square that moves left to right over the
whole duration (its x position tells which moment a frame shows) and a blue marker in the upright
top-left corner (it tells whether rotation was applied).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import cast

import av
import numpy as np

_TB = Fraction(1, 16000)  # fine timebase: any millisecond-ish pts pattern is exact
_CODEC_PIX_FMT = {
    "h264": ("libx264", "yuv420p"),
    "hevc": ("libx265", "yuv420p"),
    "vp9": ("libvpx-vp9", "yuv420p"),
    "av1": ("libsvtav1", "yuv420p"),
    "mpeg4": ("mpeg4", "yuv420p"),
    "mjpeg": ("mjpeg", "yuvj420p"),
}


def upright_frame(
    width: int,
    height: int,
    t: float,
    duration: float,
    pattern: str = "moving_square",
    variant: int = 0,
) -> np.ndarray:
    """The upright RGB image (height, width, 3) the pattern shows at time ``t``.

    ``variant`` > 0 is stamped in binary as small white blocks along the bottom edge: distinct
    files (distinct sha256) of the same size and content otherwise."""
    yy, xx = np.mgrid[0:height, 0:width]
    if pattern == "moving_square":
        bg = 96 + 40 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
        img = np.stack([bg, bg * 0.9, bg * 0.8], axis=-1)
    elif pattern == "flat":
        img = np.full((height, width, 3), 128.0)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    side = max(4, min(width, height) // 4)
    if pattern == "moving_square":
        frac = 0.0 if duration <= 0 else min(max(t / duration, 0.0), 1.0)
        x0 = round(frac * (width - side))
        y0 = (height - side) // 2
        img[y0 : y0 + side, x0 : x0 + side] = (230, 20, 20)
    marker = max(2, side // 2)
    img[:marker, :marker] = (20, 20, 230)
    for bit in range(variant.bit_length()):
        if variant >> bit & 1:
            img[-8:, 8 * bit : 8 * bit + 8] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def square_x_fraction(rgb: np.ndarray) -> float:
    """Where the red square's centre is, as a fraction of the width (inverse of the pattern)."""
    red = (rgb[..., 0].astype(int) > 160) & (rgb[..., 1].astype(int) < 90)
    cols = np.nonzero(red.any(axis=0))[0]
    if cols.size == 0:
        return float("nan")
    return float(cols.mean() / max(1, rgb.shape[1] - 1))


def vfr_times(duration: float, seed: int = 0) -> list[float]:
    """Irregular frame times in [0, duration): gaps between 10 ms and 120 ms, on a 1/16000 grid."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    t = Fraction(0)
    while t < duration:
        times.append(float(t))
        t += Fraction(int(rng.integers(160, 1921)), 16000)
    return times


def make_video(
    path: Path | str,
    *,
    width: int = 160,
    height: int = 120,
    fps: float = 25,
    duration: float = 2.0,
    codec: str = "h264",
    container: str | None = None,
    rotation: int = 0,
    vfr: bool = False,
    times: Sequence[float] | None = None,
    pattern: str = "moving_square",
    audio: bool = False,
    second_video: bool = False,
    faststart: bool = False,
    gop: int = 12,
    bframes: int = 0,
    open_gop: bool = False,
    variant: int = 0,
) -> Path:
    """Write a small real video and return its path.

    ``width``/``height`` are the upright (displayed) size. With ``rotation`` (degrees
    counter-clockwise, as FFmpeg's display matrix and ``VideoFrame.rotation`` report it) the
    stored frames are turned the other way, so a player that honours the metadata shows the
    upright pattern. ``second_video`` adds a later flat-grey MPEG-4 video stream (the pipeline
    must use the first). ``vfr=True`` uses irregular frame times (``vfr_times``); ``times``
    gives them explicitly (seconds, increasing). The container defaults to the path's suffix.
    ``bframes`` > 0: H.264 with that many B-frames (and x264's B-pyramid), like camera and
    encoder output; the default is intra/P only. ``open_gop`` (with ``bframes``): keyframes
    after the first are not IDR pictures. ``variant``: see ``upright_frame``.
    """
    path = Path(path)
    if rotation % 90:
        raise ValueError("rotation must be a multiple of 90")
    k = (rotation // 90) % 4
    coded_w, coded_h = (height, width) if k % 2 else (width, height)
    encoder, pix_fmt = _CODEC_PIX_FMT[codec]
    if times is None:
        if vfr:
            times = vfr_times(duration)
        else:
            times = [i / fps for i in range(max(1, round(duration * fps)))]
    pts = [round(t / _TB) for t in times]
    if any(b <= a for a, b in pairwise(pts)):
        raise ValueError("frame times must be strictly increasing")
    end_pts = max(pts[-1] + 1, round(duration / _TB))
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = cast(
            av.VideoStream, out.add_stream(encoder, Fraction(fps).limit_denominator(1001))
        )
        stream.width, stream.height, stream.pix_fmt = coded_w, coded_h, pix_fmt
        stream.codec_context.time_base = _TB
        stream.time_base = _TB
        stream.codec_context.gop_size = gop
        if encoder == "libx264" and bframes:
            stream.codec_context.options = {"preset": "veryfast", "bf": str(bframes)}
            if open_gop:  # keyframes that are I but not IDR pictures; B-frames refer past them
                stream.codec_context.options |= {"x264-params": "open-gop=1"}
        elif encoder == "libx264":
            stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
        if rotation:
            stream.set_display_rotation(rotation)
        astream = out.add_stream("aac", rate=8000) if audio else None
        extra = None
        if second_video:
            extra = cast(av.VideoStream, out.add_stream("mpeg4", 25))
            extra.width, extra.height, extra.pix_fmt = coded_w, coded_h, "yuv420p"
        for i, p in enumerate(pts):
            img = upright_frame(width, height, p * float(_TB), duration, pattern, variant)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(img, -k)), "rgb24")
            frame.pts, frame.time_base = p, _TB
            frame.duration = (pts[i + 1] if i + 1 < len(pts) else end_pts) - p
            for packet in stream.encode(frame):
                out.mux(packet)
            if extra is not None:
                grey = upright_frame(coded_w, coded_h, 0, duration, "flat")
                other = av.VideoFrame.from_ndarray(grey, "rgb24")
                other.pts = i
                out.mux(extra.encode(other))
        for packet in stream.encode():
            out.mux(packet)
        if extra is not None:
            out.mux(extra.encode())
        if astream is not None:
            _write_tone(out, astream, duration)
    return path


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    rate = 8000
    samples = (np.sin(np.arange(int(seconds * rate)) * 0.1) * 0.2).astype(np.float32)
    for start in range(0, samples.size, 1024):
        chunk = samples[start : start + 1024]
        if chunk.size < 1024:
            chunk = np.pad(chunk, (0, 1024 - chunk.size))
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


# --- broken inputs -----------------------------------------------------------------------------


def make_zero_byte(path: Path | str) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_random_bytes(path: Path | str, size: int = 8192, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def make_truncated_mp4(path: Path | str, keep: float = 0.5, **video_kwargs: object) -> Path:
    """An MP4 with its index up front (faststart) whose media data is cut off after ``keep``."""
    path = Path(path)
    video_kwargs.setdefault("duration", 4.0)
    make_video(path, faststart=True, **video_kwargs)  # type: ignore[arg-type]
    data = path.read_bytes()
    mdat = data.find(b"mdat")
    cut = mdat + 4 + int((len(data) - mdat - 4) * keep)
    path.write_bytes(data[:cut])
    return path


def make_audio_only(path: Path | str, seconds: float = 1.0) -> Path:
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        _write_tone(out, out.add_stream("aac", rate=8000), seconds)
    return path


def make_audio_with_cover(path: Path | str, seconds: float = 1.0) -> Path:
    """An MP3 with cover art: its only video stream is one JPEG marked ``attached_pic``."""
    from av.stream import Disposition

    path = Path(path)
    with av.open(str(path), "w", format="mp3") as out:
        audio = out.add_stream("libmp3lame", rate=8000)
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 48, "yuvj420p"
        cover.disposition = Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(upright_frame(64, 48, 0, 1), "rgb24")
        for packet in [*cover.encode(picture.reformat(format="yuvj420p")), *cover.encode()]:
            out.mux(packet)
        _write_tone(out, audio, seconds)
    return path


def make_image(path: Path | str, width: int = 64, height: int = 48) -> Path:
    """A single PNG picture (FFmpeg opens it as a one-frame 'video')."""
    path = Path(path)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        frame = av.VideoFrame.from_ndarray(upright_frame(width, height, 0, 1), "rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_zero_frames(path: Path | str) -> Path:
    """A well-formed MP4 whose every video sample is zeros: the container opens, nothing decodes."""
    path = Path(path)
    make_video(path, width=64, height=48, duration=0.4, faststart=True)
    data = path.read_bytes()
    mdat = data.find(b"mdat") + 4
    path.write_bytes(data[:mdat] + bytes(len(data) - mdat))
    return path


class _Bits:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, v: int) -> None:
        self.bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, v: int) -> None:
        v += 1
        self.u(v.bit_length() - 1, 0)
        self.u(v.bit_length(), v)

    def rbsp(self) -> bytes:
        bits = [*self.bits, 1]
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def make_huge_header(path: Path | str, width: int = 100000, height: int = 100000) -> Path:
    """A raw H.264 stream whose sequence header (SPS) declares ``width`` x ``height`` pixels."""
    path = Path(path)
    sps = _Bits()
    for n, v in ((8, 66), (8, 0), (8, 52)):  # baseline profile, level 5.2
        sps.u(n, v)
    for v in (0, 0, 2, 1):  # sps id, log2_max_frame_num-4, poc type 2, one reference frame
        sps.ue(v)
    sps.u(1, 0)
    sps.ue(-(-width // 16) - 1)
    sps.ue(-(-height // 16) - 1)
    for v in (1, 1, 0, 0):  # frame_mbs_only, direct_8x8, no cropping, no VUI
        sps.u(1, v)
    pps = _Bits()
    for v in (0, 0):
        pps.ue(v)
    pps.u(2, 0)
    for v in (0, 0, 0):
        pps.ue(v)
    pps.u(3, 0)
    for _ in range(3):
        pps.ue(0)  # qp/qs/chroma offsets (se(0) == ue(0))
    pps.u(3, 0)
    start = b"\x00\x00\x00\x01"
    path.write_bytes((start + b"\x67" + sps.rbsp() + start + b"\x68" + pps.rbsp()) * 3)
    return path
