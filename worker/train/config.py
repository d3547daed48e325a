"""What a training run is asked to do; stored in checkpoints and in the model's provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class TrainError(ValueError):
    """A training run that cannot start or continue as asked."""


@dataclass
class TrainConfig:
    data: Path  # folder per class, or a CSV of path,label
    out: str  # model name in the store
    arch: str | None = None  # None: "resnet18", or the --init model's
    segments: int = 8
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adamw"  # "adamw" | "sgd"
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    val_fraction: float = 0.1
    seed: int = 0
    input_size: int = 112
    resize_short: int | None = None  # None: same as input_size (no crop of square clips)
    shift: bool = True  # False: the TSN baseline
    init: str | None = None  # a stored model (name or dir) to start from
    resume: bool = False
    workers: int = 0  # DataLoader processes
    cache: bool = True  # keep decoded, downscaled training clips in memory
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    window_seconds: float | None = None  # None: median clip duration
    stride_seconds: float | None = None  # None: half the window
    dropout: float = 0.5
    checkpoint_dir: Path | None = None  # None: data_dir/train/<out>
    model_root: Path | None = None  # None: the settings' model store

    def validate(self) -> None:
        if self.segments < 1:
            raise TrainError("--segments must be at least 1")
        if self.epochs < 1:
            raise TrainError("--epochs must be at least 1")
        if self.batch_size < 1:
            raise TrainError("--batch-size must be at least 1")
        if self.lr <= 0:
            raise TrainError("--lr must be positive")
        if self.optimizer not in ("adamw", "sgd"):
            raise TrainError(f"--optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.input_size < 32:
            raise TrainError("--input-size must be at least 32")
        if self.resize_short is not None and self.resize_short < self.input_size:
            raise TrainError("--resize-short must be >= --input-size")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("data", "checkpoint_dir", "model_root"):
            d[key] = None if d[key] is None else str(d[key])
        return d
