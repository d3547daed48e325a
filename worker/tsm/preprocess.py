"""The model-input contract.

The video pipeline delivers clips as uint8 RGB ``(N, T, H, W, 3)`` already resized (short side
``meta.resize_short``) and centre-cropped to ``meta.input_size``; :func:`normalize` turns them into
the network input ``(N, T, 3, H, W)``: /255, then per-channel mean/std from the model metadata.
:func:`reference_frame_transform` is the full released-accuracy transform from a raw frame, for
tests and for checking the pipeline's libswscale path.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from worker.tsm.meta import ModelMeta


def check_clips(clips: Tensor, meta: ModelMeta) -> None:
    """Raise ``ValueError`` unless ``clips`` is uint8 ``(N, T, S, S, 3)`` with meta's T and S."""
    s = meta.input_size
    if clips.dtype != torch.uint8:
        raise ValueError(f"clips must be uint8, got {clips.dtype}")
    if clips.dim() != 5 or clips.shape[4] != 3:
        raise ValueError(f"clips must be (N, T, H, W, 3), got shape {tuple(clips.shape)}")
    if clips.shape[1] != meta.num_segments or clips.shape[2:4] != (s, s):
        raise ValueError(
            f"clips of shape {tuple(clips.shape)} do not match model "
            f"(T={meta.num_segments}, {s}x{s})"
        )


def normalize(
    clips: Tensor, meta: ModelMeta, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:  # fmt: skip
    """uint8 ``(N, T, H, W, 3)`` -> normalized ``(N, T, 3, H, W)`` of ``dtype`` on ``device``.

    The uint8 tensor is moved first (4x less traffic), then converted on the device, in one
    multiply-add per element: ``(x / 255 - mean) / std`` as ``x * scale + shift`` (equal to
    within float rounding; four passes over the batch cost 3x the time of the two, a tenth of
    the demo model's inference on a CPU).
    """
    check_clips(clips, meta)
    x = clips.to(device) if device is not None else clips
    scale, shift = _affine(tuple(meta.mean), tuple(meta.std), x.device)
    x = x.permute(0, 1, 4, 2, 3).to(dtype=torch.float32, memory_format=torch.contiguous_format)
    return x.mul_(scale).add_(shift).to(dtype)


@functools.lru_cache(maxsize=16)
def _affine(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """``normalize``'s per-channel scale and shift, computed in float64, once per model and
    device (building them took 25 us, 5% of a batch's normalization; callers never modify them)."""
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    scale = (1.0 / (255.0 * s)).to(device=device, dtype=torch.float32)
    return scale, (-m / s).to(device=device, dtype=torch.float32)


def resize_short_side(frame: Tensor, short: int) -> Tensor:
    """Bilinear (antialiased, PIL-like) resize of ``(3, H, W)`` float so min(H, W) == short."""
    h, w = frame.shape[-2:]
    if h <= w:
        size = (short, max(1, round(w * short / h)))
    else:
        size = (max(1, round(h * short / w)), short)
    return F.interpolate(
        frame[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


def center_crop(frame: Tensor, size: int) -> Tensor:
    """Centre ``size x size`` crop of ``(C, H, W)`` (the authors' GroupCenterCrop rounding)."""
    h, w = frame.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"frame {h}x{w} is smaller than the crop {size}")
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return frame[..., top : top + size, left : left + size]


def reference_frame_transform(frame: Tensor, meta: ModelMeta) -> Tensor:
    """Raw uint8 RGB frame ``(H, W, 3)`` -> normalized ``(3, S, S)`` float32, all in torch."""
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"expected a uint8 (H, W, 3) RGB frame, got {frame.dtype} {tuple(frame.shape)}"
        )
    x = frame.permute(2, 0, 1).float()
    x = center_crop(resize_short_side(x, meta.resize_short), meta.input_size)
    x = x.clamp(0, 255).div(255.0)
    mean = torch.tensor(meta.mean).view(3, 1, 1)
    std = torch.tensor(meta.std).view(3, 1, 1)
    return (x - mean) / std


def segment_indices(num_frames: int, num_segments: int) -> list[int]:
    """TSN test-time sampling: the middle frame of each of T equal segments."""
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    tick = num_frames / num_segments
    return [min(num_frames - 1, int(tick / 2.0 + tick * i)) for i in range(num_segments)]
