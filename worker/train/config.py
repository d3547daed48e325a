"""What a training run is asked to do; stored in checkpoints and in the model's provenance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vcat.tasks import CLIP_SECONDS_MAX, CLIP_SECONDS_MIN


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
        """Every option, before any data is read: a bad one fails at once, not after training."""
        from worker.tsm.store import StoreError, _check_name

        try:  # the store's rule: also keeps data_dir/train/<out> inside data_dir/train
            _check_name(self.out)
        except StoreError as exc:
            raise TrainError(f"--out: {exc}") from exc
        if self.segments < 1:
            raise TrainError("--segments must be at least 1")
        if self.epochs < 1:
            raise TrainError("--epochs must be at least 1")
        if self.batch_size < 1:
            raise TrainError("--batch-size must be at least 1")
        # `lr <= 0` lets nan through (every comparison with nan is False): test finite first.
        floats = {
            "--lr": (self.lr, False),
            "--weight-decay": (self.weight_decay, True),
            "--warmup-epochs": (self.warmup_epochs, True),
            "--val-fraction": (self.val_fraction, True),
            "--dropout": (self.dropout, True),
        }
        for option, (value, zero_ok) in floats.items():
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                raise TrainError(
                    f"{option} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {value}"
                )
        # The model's default clip for indexing: the bounds `vcat index` and the API accept.
        for option, seconds in (
            ("--window-seconds", self.window_seconds),
            ("--stride-seconds", self.stride_seconds),
        ):
            if seconds is not None and not CLIP_SECONDS_MIN <= seconds <= CLIP_SECONDS_MAX:
                raise TrainError(  # NaN fails the comparison too
                    f"{option} must be between {CLIP_SECONDS_MIN:g} and {CLIP_SECONDS_MAX:g} s, "
                    f"got {seconds}"
                )
        if self.val_fraction >= 1:
            raise TrainError(f"--val-fraction must be below 1, got {self.val_fraction}")
        if self.dropout >= 1:
            raise TrainError(f"--dropout must be below 1, got {self.dropout}")
        if not 0 <= self.seed < 2**32:
            raise TrainError(f"--seed must be in [0, 2**32), got {self.seed}")
        if self.workers < 0:
            raise TrainError("--workers must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainError("--max-steps must be at least 1")
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
