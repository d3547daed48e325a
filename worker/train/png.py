"""A tiny PNG writer and a 3x5 digit font: enough for a confusion-matrix plot, no matplotlib."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch

# 3x5 bitmaps of the digits, one string of 15 bits per glyph, row by row.
_DIGITS = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001111",
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write a uint8 ``(H, W, 3)`` RGB image as an 8-bit truecolour PNG."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png)


def draw_text(img: torch.Tensor, text: str, x: int, y: int, ink: tuple[int, int, int]) -> None:
    """Draw digits at (x, y) into a uint8 ``(H, W, 3)`` tensor, 2 px per font pixel."""
    colour = torch.tensor(ink, dtype=torch.uint8)
    for n, ch in enumerate(text):
        bits = _DIGITS.get(ch)
        if bits is None:
            continue
        for b, bit in enumerate(bits):
            if bit == "1":
                py, px = y + 2 * (b // 3), x + n * 8 + 2 * (b % 3)
                img[py : py + 2, px : px + 2] = colour
