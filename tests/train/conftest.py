"""Fixtures for training tests: tiny synthetic datasets (2-3 classes, a few 2.5 s clips)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from worker.synth import generate_dataset
from worker.train.config import TrainConfig

TWO_CLASSES = ("moving something up", "something appearing")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two easy classes, 4 clips each (read-only: copy it before modifying)."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(root, 4, seed=7, actions=TWO_CLASSES)
    return root


@pytest.fixture
def data_copy(tiny_data: Path, tmp_path: Path) -> Path:
    """A private, writable copy of ``tiny_data``."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


@pytest.fixture
def tiny_config(tiny_data: Path, tmp_path: Path) -> TrainConfig:
    """A seconds-fast training run: T=2, 32x32 input, full-batch steps."""
    return TrainConfig(
        data=tiny_data,
        out="tiny",
        segments=2,
        epochs=1,
        batch_size=8,
        input_size=32,
        val_fraction=0.0,
        seed=3,
        dropout=0.0,
        warmup_epochs=0.0,
        checkpoint_dir=tmp_path / "ckpt",
        model_root=tmp_path / "models",
    )
