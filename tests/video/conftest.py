"""Small generated videos shared by the video pipeline tests (made once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests import videos
from worker.tsm.meta import ModelMeta

W, H = 96, 64


@pytest.fixture(scope="session")
def vdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def cfr_video(vdir: Path) -> Path:
    return videos.make_video(vdir / "cfr.mp4", width=W, height=H, fps=25, duration=3.0)


@pytest.fixture(scope="session")
def vfr_video(vdir: Path) -> Path:
    return videos.make_video(vdir / "vfr.mp4", width=W, height=H, duration=3.0, vfr=True)


@pytest.fixture(scope="session")
def meta() -> ModelMeta:
    """Three position labels; input 48 from a 64 short side, 4 frames per 1 s window."""
    return ModelMeta(
        name="fake",
        arch="resnet18",
        num_segments=4,
        labels=["left", "middle", "right"],
        input_size=48,
        resize_short=64,
        window_seconds=1.0,
        stride_seconds=1.0,
    )


def position_logits(clips: torch.Tensor) -> torch.Tensor:
    """Fake model: scores where the red square is (left / middle / right), averaged over T."""
    out = []
    for clip in clips.numpy():
        xs = [videos.square_x_fraction(f) for f in clip]
        x = float(np.nanmean(xs)) if not all(np.isnan(xs)) else 0.5
        out.append([-20 * (x - c) ** 2 for c in (0.0, 0.5, 1.0)])
    return torch.tensor(out, dtype=torch.float32)
