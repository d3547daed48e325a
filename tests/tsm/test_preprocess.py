from __future__ import annotations

import pytest
import torch

from worker.tsm.meta import ModelMeta
from worker.tsm.preprocess import (
    center_crop,
    normalize,
    reference_frame_transform,
    segment_indices,
)

META = ModelMeta("t", "resnet18", 2, ["a"], input_size=8, resize_short=12)


def test_normalize_layout_and_values() -> None:
    clips = torch.zeros(1, 2, 8, 8, 3, dtype=torch.uint8)
    clips[0, 1, 2, 3] = torch.tensor([255, 0, 128], dtype=torch.uint8)
    x = normalize(clips, META)
    assert x.shape == (1, 2, 3, 8, 8) and x.dtype == torch.float32
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(META.mean)) / torch.tensor(
        META.std
    )
    assert torch.allclose(x[0, 1, :, 2, 3], expected)
    assert torch.allclose(x[0, 0, :, 0, 0], -torch.tensor(META.mean) / torch.tensor(META.std))
    with pytest.raises(ValueError, match="uint8"):
        normalize(clips.float(), META)


def test_reference_transform_resizes_short_side_and_crops_centre() -> None:
    frame = torch.zeros(24, 36, 3, dtype=torch.uint8)
    frame[:, 18:] = 255  # right half white
    out = reference_frame_transform(frame, META)
    assert out.shape == (3, 8, 8)
    # 24x36 -> 12x18, crop columns 5..12: left half dark, right half bright.
    assert out[0, :, 0].max() < 0 < out[0, :, -1].min()
    with pytest.raises(ValueError, match="smaller than the crop"):
        center_crop(torch.zeros(3, 4, 4), 8)


def test_segment_indices_are_segment_centres() -> None:
    assert segment_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert segment_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]  # int(0.1875 + 0.375 i)
