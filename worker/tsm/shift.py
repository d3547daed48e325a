"""The temporal shift (Lin et al., ICCV 2019) and its placement inside 2D backbones.

Input to a shifted layer is ``(N*T, C, H, W)`` with the T frames of a clip contiguous and in order.
Bidirectional (offline) shift, ``fold = C // shift_div``: channels ``[0:fold]`` of frame t come
from frame t+1, ``[fold:2*fold]`` from frame t-1, the rest stay; the clip ends are zero-padded.
Causal (online) shift: channels ``[0:fold]`` of frame t come from frame t-1 (zeros at t=0), the rest
stay; this is what the streaming model computes with its per-block buffers.

The output is built with a single ``torch.cat`` of slices of the input (one allocation per shift,
no slice assignment), which exports cleanly to ONNX.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

ShiftMode = Literal["bidirectional", "causal"]


def _frame_pieces(
    x: Tensor, num_segments: int, fold: int, mode: ShiftMode
) -> tuple[list[Tensor], int]:
    """Slices of ``x`` (as ``(N, T, C, H, W)``) whose channel-concatenation is the shifted clip."""
    nt, c, h, w = x.shape
    x5 = x.reshape(nt // num_segments, num_segments, c, h, w)
    zeros = x5.new_zeros(x5.shape[0], fold, h, w)
    pieces: list[Tensor] = []
    last = num_segments - 1
    for t in range(num_segments):
        if mode == "bidirectional":
            pieces.append(x5[:, t + 1, :fold] if t < last else zeros)
            pieces.append(x5[:, t - 1, fold : 2 * fold] if t > 0 else zeros)
            pieces.append(x5[:, t, 2 * fold :])
        else:
            pieces.append(x5[:, t - 1, :fold] if t > 0 else zeros)
            pieces.append(x5[:, t, fold:])
    return pieces, c


def temporal_shift(
    x: Tensor, num_segments: int, shift_div: int = 8, mode: ShiftMode = "bidirectional"
) -> Tensor:
    """Shift ``x`` ``(N*T, C, H, W)`` along time; returns a new tensor of the same shape."""
    if x.dim() != 4:
        raise ValueError(f"temporal_shift expects (N*T, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] % num_segments:
        raise ValueError(f"batch {x.shape[0]} is not a multiple of num_segments={num_segments}")
    fold = x.shape[1] // shift_div
    if fold == 0:
        return x
    pieces, c = _frame_pieces(x, num_segments, fold, mode)
    # Pieces are (N, k, H, W); concatenating along channels gives (N, T*C, H, W) = (N*T, C, H, W).
    out = torch.cat(pieces, dim=1)
    return out.reshape(x.shape[0], c, x.shape[2], x.shape[3])


class TemporalShift(nn.Module):
    """Shifts its input in time, then applies the wrapped module ``net``.

    Wrapping (rather than a separate layer) keeps the authors' state-dict names:
    ``layer1.0.conv1.net.weight``. In streaming mode (set by :mod:`worker.tsm.online`) the input is
    one frame per clip and ``stream_buffer`` holds the previous frame's first ``fold`` channels.
    """

    def __init__(
        self, net: nn.Module, num_segments: int, shift_div: int = 8, mode: ShiftMode = "causal"
    ) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.shift_div = shift_div
        self.mode: ShiftMode = mode
        self.streaming = False
        self.stream_buffer: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.streaming:
            return self.net(self._stream_step(x))
        return self.net(temporal_shift(x, self.num_segments, self.shift_div, self.mode))

    def _stream_step(self, x: Tensor) -> Tensor:
        fold = x.shape[1] // self.shift_div
        buffer = self.stream_buffer
        if buffer is None:
            buffer = x.new_zeros(x.shape[0], fold, x.shape[2], x.shape[3])
        self.stream_buffer = x[:, :fold]
        return torch.cat([buffer, x[:, fold:]], dim=1)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}, mode={self.mode}"


def resnet_shift_targets(num_blocks: list[int]) -> list[tuple[int, int]]:
    """(stage, block) pairs shifted under "blockres" placement for a ResNet with these stages.

    The authors shift every block, except in very deep nets (layer3 with >= 23 blocks, i.e.
    ResNet-101/152) where only even-indexed blocks of every stage are shifted.
    """
    n_round = 2 if num_blocks[2] >= 23 else 1
    return [(s, b) for s, n in enumerate(num_blocks) for b in range(n) if b % n_round == 0]


MOBILENETV2_SHIFTED = (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)


def insert_shift(
    backbone: nn.Module,
    num_segments: int,
    shift_div: int = 8,
    place: str = "blockres",
    mode: ShiftMode = "bidirectional",
) -> None:
    """Insert temporal shifts in place into a :mod:`worker.tsm` ResNet or MobileNetV2 backbone."""
    from worker.tsm.mobilenetv2 import MobileNetV2
    from worker.tsm.resnet import ResNet

    def wrap(m: nn.Module) -> TemporalShift:
        return TemporalShift(m, num_segments, shift_div, mode)

    if isinstance(backbone, ResNet):
        stages = [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
        if place == "blockres":
            for s, b in resnet_shift_targets([len(st) for st in stages]):
                block: Any = stages[s][b]
                block.conv1 = wrap(block.conv1)
        elif place == "block":
            for stage in stages:
                for b in range(len(stage)):
                    stage[b] = wrap(stage[b])
        else:
            raise ValueError(f"unknown shift placement {place!r} (blockres | block)")
    elif isinstance(backbone, MobileNetV2):
        if place != "blockres":
            raise ValueError(f"MobileNetV2 supports only blockres placement, not {place!r}")
        for i in MOBILENETV2_SHIFTED:
            conv: Any = backbone.features[i].conv
            conv[0] = wrap(conv[0])
    else:
        raise TypeError(f"cannot insert temporal shift into {type(backbone).__name__}")
