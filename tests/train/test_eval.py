"""Metrics, the confusion-matrix PNG, and ``vcat eval``."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from worker.train.evaluate import confusion_png, metrics
from worker.train.png import write_png


def test_metrics_on_known_logits() -> None:
    labels = ["a", "b", "c", "d", "e", "f"]
    logits = torch.tensor(
        [
            [9, 1, 0, 0, 0, -1],  # a -> a
            [1, 9, 0, 0, 0, -1],  # a -> b (top-2 has a)
            [0, 9, 1, 0, 0, -1],  # b -> b
            [9, 8, 7, 6, 5, -1],  # c -> a (top-5 has c)
        ],
        dtype=torch.float,
    )
    m = metrics(logits, torch.tensor([0, 0, 1, 2]), labels)
    assert m.top1 == 0.5 and m.top5 == 1.0 and m.count == 4
    assert m.per_class["a"] == 0.5 and m.per_class["b"] == 1.0 and m.per_class["c"] == 0.0
    assert m.per_class["d"] is None and m.support["a"] == 2
    assert m.confusion[0][:2] == [1, 1] and m.confusion[2][0] == 1
    m5 = metrics(logits, torch.tensor([5, 5, 5, 5]), labels)
    assert m5.top5 == 0.0  # class f is never in the top 5 above


def _read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w, 3)


def test_png_round_trip(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", img)
    np.testing.assert_array_equal(_read_png(tmp_path / "x.png"), img)
    with pytest.raises(ValueError):
        write_png(tmp_path / "y.png", img.astype(np.float32))


def test_confusion_png_shades_the_diagonal(tmp_path: Path) -> None:
    logits = torch.eye(3) * 5
    m = metrics(logits, torch.tensor([0, 1, 2]), ["a", "b", "c"])
    img = _read_png(confusion_png(m, tmp_path / "c.png"))
    cell, margin = 24, 28
    centre = margin + 2  # above the count digits
    diag = img[centre, margin + 2]
    off = img[centre, margin + cell + 2]
    assert diag[0] < 50 and tuple(off) == (255, 255, 255)
