"""Streaming (online) TSM: one frame in, one prediction out, with cached shift buffers.

Each shifted layer keeps the first ``C // shift_div`` channels of the previous frame's input and
substitutes them for the current frame's (the one-way shift of the authors' online demo). Running
:meth:`OnlineRecognizer.step` over a clip frame by frame gives the per-frame logits of the same
weights run offline with the causal shift (``Recognizer.frame_logits``, ``meta.online=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from worker.tsm.recognizer import Recognizer
from worker.tsm.shift import TemporalShift


@dataclass
class StreamState:
    """Per-stream shift buffers, one per shifted layer (None until the first frame)."""

    buffers: list[Tensor | None] = field(default_factory=list)
    frames: int = 0


class OnlineRecognizer:
    """Frame-by-frame inference with a caller-held :class:`StreamState`.

    ``model`` must be built with causal shifts (``ModelMeta(online=True)``, e.g. the imported
    ``mobilenetv2_jester_online.pth.tar``); offline (bidirectional) checkpoints need the future
    frame and cannot stream.
    """

    def __init__(self, model: Recognizer) -> None:
        self.model = model.eval()
        self.shifts = [m for m in model.modules() if isinstance(m, TemporalShift)]
        if any(m.mode != "causal" for m in self.shifts):
            raise ValueError("only models with the causal (one-way) shift can run online")

    def init_state(self) -> StreamState:
        """A fresh stream (zero history)."""
        return StreamState(buffers=[None] * len(self.shifts))

    @torch.inference_mode()
    def step(self, frame: Tensor, state: StreamState) -> Tensor:
        """Normalized frames ``(N, 3, H, W)`` -> logits ``(N, K)``; updates ``state``."""
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f"expected frames (N, 3, H, W), got shape {tuple(frame.shape)}")
        if len(state.buffers) != len(self.shifts):
            raise ValueError("state does not belong to this model (use init_state())")
        try:
            for m, buf in zip(self.shifts, state.buffers, strict=True):
                m.streaming, m.stream_buffer = True, buf
            logits = self.model.head(self.model.dropout(self.model.backbone(frame)))
            state.buffers = [m.stream_buffer for m in self.shifts]
        finally:
            for m in self.shifts:
                m.streaming, m.stream_buffer = False, None
        state.frames += 1
        return logits
