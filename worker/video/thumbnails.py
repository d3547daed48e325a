"""Small JPEG thumbnails with FFmpeg's MJPEG encoder (no imaging library needed)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int = 5) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image; ``quality`` is MJPEG qscale (2 best .. 31)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = w - w % 2, h - h % 2  # 4:2:0 needs even sides
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    codec.options = {"qmin": str(quality), "qmax": str(quality)}
    even = np.ascontiguousarray(rgb[: codec.height, : codec.width])
    frame = av.VideoFrame.from_ndarray(even, "rgb24")
    frame = frame.reformat(format="yuvj420p")
    frame.pts = 0
    packets = [*codec.encode(frame), *codec.encode(None)]
    return b"".join(bytes(p) for p in packets)
