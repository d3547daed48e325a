"""Small JPEG thumbnails with FFmpeg's MJPEG encoder (no imaging library needed)."""

from __future__ import annotations

import threading
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from worker.video.decode import SWSCALE_THREADS


class _ThreadState(threading.local):
    """Per thread: open MJPEG encoders by (width, height, quality), and one swscale context
    (RGB -> YUV) that PyAV rebuilds only when the size changes: ``frame.reformat`` makes a new
    one per call, which was two thirds of a 64x64 thumbnail's cost."""

    def __init__(self) -> None:
        self.encoders: dict[tuple[int, int, int], av.VideoCodecContext] = {}
        self.sws = VideoReformatter()


_local = _ThreadState()


def _encoder(width: int, height: int, quality: int) -> av.VideoCodecContext:
    """An open encoder kept per thread and size: MJPEG frames are independent, so one context
    serves every thumbnail (opening one per image cost half of each encode)."""
    codec = _local.encoders.get((width, height, quality))
    if codec is None:
        codec = av.CodecContext.create("mjpeg", "w")
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuvj420p"
        codec.time_base = Fraction(1, 25)
        codec.options = {"qmin": str(quality), "qmax": str(quality)}
        codec.thread_count = 1  # FFmpeg's default, a thread per core, cost a 64x64 image twice
        _local.encoders[(width, height, quality)] = codec
    return codec


def encode_jpeg(rgb: np.ndarray, quality: int = 5) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image; ``quality`` is MJPEG qscale (2 best .. 31)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    codec = _encoder(w - w % 2, h - h % 2, quality)  # 4:2:0 needs even sides
    even = np.ascontiguousarray(rgb[: codec.height, : codec.width])
    frame = _local.sws.reformat(
        av.VideoFrame.from_ndarray(even, "rgb24"), format="yuvj420p", threads=SWSCALE_THREADS
    )
    frame.pts = None  # one context, many images: no timestamps to keep increasing
    return b"".join(bytes(p) for p in codec.encode(frame))  # intra-only: no frame delay
