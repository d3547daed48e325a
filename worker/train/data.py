"""Training data: a folder per class (or a CSV of path,label), probed, split and sampled TSN-style.

Clips are expected to be short (action clips, seconds); each is decoded whole with PyAV and T
frames are picked from it. Training picks a random frame inside each of T equal segments (TSN);
evaluation takes the middle frame of each segment, as the released TSM models were tested.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from torch.utils.data import Dataset

from worker.video.decode import SWSCALE_THREADS

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts"}
FLIP_MAP_FILE = "flip_map.json"
REVERSE_MAP_FILE = "reverse_map.json"
MAX_SCALE = 1.15  # training zooms in by up to this factor before the random crop


class DataError(ValueError):
    """The training or evaluation data cannot be used as given."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    seconds: float  # duration, from the container


@dataclass
class DataSet:
    items: list[Item]
    labels: list[str]  # sorted class names; index = class id
    skipped: list[tuple[Path, str]]  # unreadable files and why
    flip_map: dict[str, str]  # label -> label after a horizontal flip; others never flip
    reverse_map: dict[str, str]  # label -> label played backwards; others never reversed

    def targets(self) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[item.label] for item in self.items]


def label_of_folder(name: str) -> str:
    """Folder names use underscores for spaces ("moving_something_up" -> "moving something up")."""
    return name.replace("_", " ").strip()


def _probe(path: Path) -> float:
    """Duration in seconds of a readable video; raises on anything unreadable."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError("no video stream")
        stream = container.streams.video[0]
        frame = next(container.decode(stream), None)
        if frame is None:
            raise DataError("no decodable frames")
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000
        rate = float(stream.average_rate or 0)
        return (stream.frames or 0) / rate if rate else 0.0


def _listing(source: Path) -> list[tuple[Path, str]]:
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source}: expected a folder per class or a .csv of path,label")
        pairs: list[tuple[Path, str]] = []
        with source.open(newline="") as fh:
            for n, row in enumerate(csv.reader(fh), start=1):
                if not row or row[0].startswith("#") or (n == 1 and row[:2] == ["path", "label"]):
                    continue
                if len(row) < 2 or not row[1].strip():
                    raise DataError(f"{source}:{n}: expected 'path,label', got {row!r}")
                path = Path(row[0].strip())
                pairs.append((path if path.is_absolute() else source.parent / path, row[1].strip()))
        return pairs
    if not source.is_dir():
        raise DataError(f"{source}: no such folder or CSV file")
    pairs = []
    class_dirs = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{source}: no class folders (expected one folder of videos per class)")
    for class_dir in class_dirs:
        videos = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
        )
        if not videos:
            raise DataError(f"class folder {class_dir} has no video files")
        pairs += [(v, label_of_folder(class_dir.name)) for v in videos]
    return pairs


def load_dataset(
    source: Path,
    *,
    min_classes: int = 2,
    on_skip: Callable[[Path, str], None] | None = None,
) -> DataSet:
    """Find and probe every video of ``source``; unreadable ones are skipped and reported."""
    pairs = _listing(Path(source))
    items: list[Item] = []
    skipped: list[tuple[Path, str]] = []
    for path, label in pairs:
        try:
            seconds = _probe(path)
        except (av.FFmpegError, DataError, OSError, StopIteration) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            skipped.append((path, reason))
            if on_skip is not None:
                on_skip(path, reason)
            continue
        items.append(Item(path, label, seconds))
    labels = sorted({label for _, label in pairs})
    counts = Counter(item.label for item in items)
    empty = [label for label in labels if counts[label] == 0]
    if empty:
        raise DataError(f"no readable videos for class(es): {', '.join(empty)}")
    if len(labels) < min_classes:
        raise DataError(
            f"found {len(labels)} class ({', '.join(labels)}); training needs at least "
            f"{min_classes} classes"
        )
    flip_map = _label_map(Path(source), FLIP_MAP_FILE, labels)
    reverse_map = _label_map(Path(source), REVERSE_MAP_FILE, labels)
    return DataSet(items, labels, skipped, flip_map, reverse_map)


def _label_map(source: Path, name: str, labels: list[str]) -> dict[str, str]:
    """``{label: label after the augmentation}`` from a JSON file in a dataset folder, if any."""
    path = source / name
    if not (source.is_dir() and path.is_file()):
        return {}
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: {exc}") from None
    return {str(k): str(v) for k, v in raw.items() if k in labels and v in labels}


def split(dataset: DataSet, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified train/validation indices, deterministic for ``seed``."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {val_fraction}")
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, item in enumerate(dataset.items):
        by_class.setdefault(item.label, []).append(i)
    train, val = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        rng.shuffle(idx)
        n_val = math.floor(len(idx) * val_fraction) if len(idx) > 1 else 0
        if val_fraction > 0 and n_val == 0 and len(idx) > 1:
            n_val = 1
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def segment_indices(n: int, t: int, rng: random.Random | None) -> list[int]:
    """T frame indices out of n: random inside each segment (``rng``) or each segment's middle."""
    if n <= 0:
        raise DataError("clip has no frames")
    if rng is None:
        tick = n / t
        return [min(int(tick / 2 + tick * i), n - 1) for i in range(t)]
    out = []
    for i in range(t):
        lo, hi = math.floor(i * n / t), math.floor((i + 1) * n / t)
        out.append(rng.randrange(lo, hi) if hi > lo else min(lo, n - 1))
    return out


def decode_frames(path: Path) -> np.ndarray:
    """All frames of a (short) clip as uint8 RGB ``(n, H, W, 3)``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        sws = VideoReformatter()  # one swscale context for the clip, not one per frame
        frames = [
            sws.reformat(f, format="rgb24", threads=SWSCALE_THREADS).to_ndarray()
            for f in container.decode(stream)
        ]  # one swscale thread: 0.01 ms a 128x128 frame, against 0.05 with a thread per core
    if not frames:
        raise DataError(f"{path}: no decodable frames")
    return np.stack(frames)


def resize_crop(
    frames: np.ndarray,
    resize_short: int,
    size: int,
    rng: random.Random | None,
    *,
    crop: bool = True,
) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> uint8 ``(T, size, size, 3)``: short side to ``resize_short``,
    then a centre crop (``rng`` None) or a random crop with a mild random scale (training).
    ``crop=False``: resize only."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    short = resize_short
    if rng is not None:
        short = max(size, round(resize_short * rng.uniform(1.0, MAX_SCALE)))
    scale = short / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    if not crop:
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if rng is None:
        top, left = (nh - size) // 2, (nw - size) // 2
    else:
        top, left = rng.randint(0, nh - size), rng.randint(0, nw - size)
    x = x[:, :, top : top + size, left : left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class ClipDataset(Dataset[tuple[torch.Tensor, int]]):
    """Returns ``(uint8 clip (T, S, S, 3), class index)``; normalisation happens on the batch.

    ``train=True``: TSN random sampling, random crop/scale, brightness jitter, a horizontal
    flip only for classes in ``flip_map`` (the label changes accordingly: left<->right), and
    time reversal only for classes in ``reverse_map`` (up<->down, appearing<->disappearing).
    """

    def __init__(
        self,
        dataset: DataSet,
        indices: Sequence[int],
        num_segments: int,
        input_size: int,
        resize_short: int,
        *,
        train: bool,
        seed: int = 0,
        labels: Sequence[str] | None = None,
        cache: bool = False,
    ) -> None:
        self.items = [dataset.items[i] for i in indices]
        self.labels = list(labels or dataset.labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.flip_map, self.reverse_map = dataset.flip_map, dataset.reverse_map
        self.t, self.size, self.short = num_segments, input_size, resize_short
        self.train, self.seed, self.epoch = train, seed, 0
        # Decoded clips, kept small: short side at the largest training scale. Training decodes
        # every clip once instead of once per epoch (decoding dominates for tiny networks).
        self.cache_short = math.ceil(resize_short * MAX_SCALE) if train else resize_short
        self.cache: dict[int, np.ndarray] | None = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        """Different (but reproducible) augmentation every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.items[i]
        rng = random.Random(f"{self.seed}/{self.epoch}/{i}") if self.train else None
        frames = self.cache.get(i) if self.cache is not None else None
        if frames is None:
            frames = decode_frames(item.path)
            if self.cache is not None:
                # Shrink once (all frames) so the cache stays small; crops still come later.
                small = resize_crop(frames, self.cache_short, self.cache_short, None, crop=False)
                frames = self.cache[i] = small.numpy()
        picked = frames[segment_indices(len(frames), self.t, rng)]
        clip = resize_crop(picked, self.short, self.size, rng)
        label = item.label
        if rng is not None:
            gain = rng.uniform(0.8, 1.2)
            clip = (clip.float() * gain).clamp(0, 255).to(torch.uint8)
            if label in self.flip_map and rng.random() < 0.5:
                clip = clip.flip(2)
                label = self.flip_map[label]
            if label in self.reverse_map and rng.random() < 0.5:
                clip = clip.flip(0)
                label = self.reverse_map[label]
        return clip, self.index[label]
