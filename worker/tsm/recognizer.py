"""TSN-style recognizer: a 2D backbone per frame, dropout, linear head, logits averaged over T."""

from __future__ import annotations

from torch import Tensor, nn

from worker.tsm.meta import ModelMeta
from worker.tsm.mobilenetv2 import mobilenet_v2
from worker.tsm.resnet import DEPTHS, resnet
from worker.tsm.shift import ShiftMode, insert_shift

ARCHS = (*DEPTHS, "mobilenetv2")


class Recognizer(nn.Module):
    """``forward((N, T, 3, H, W) float) -> (N, K)`` logits, the mean of per-frame logits.

    State-dict keys: ``backbone.*`` (torchvision / authors' names, shifted convs as ``.net``) and
    ``head.weight`` / ``head.bias``.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, num_classes: int, num_segments: int,
        dropout: float = 0.5,
    ) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.num_segments = num_segments
        self.feature_dim = feature_dim
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"expected clips (N, T, 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_segments:
            raise ValueError(f"model takes T={self.num_segments} frames per clip, got {x.shape[1]}")

    def features(self, x: Tensor) -> Tensor:
        """Per-frame backbone features ``(N*T, feature_dim)`` of clips ``(N, T, 3, H, W)``."""
        self._check(x)
        return self.backbone(x.flatten(0, 1))

    def frame_logits(self, x: Tensor) -> Tensor:
        """Per-frame logits ``(N, T, K)`` (before the average over T)."""
        n, t = x.shape[:2]
        return self.head(self.dropout(self.features(x))).view(n, t, -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.frame_logits(x).mean(1)


def build_backbone(arch: str) -> tuple[nn.Module, int]:
    """A random-weight backbone and its feature width."""
    if arch == "mobilenetv2":
        net = mobilenet_v2()
        return net, net.feature_dim
    if arch in DEPTHS:
        rn = resnet(arch)
        return rn, rn.feature_dim
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


def build_model(meta: ModelMeta, dropout: float = 0.5) -> Recognizer:
    """A random-weight recognizer for ``meta`` (arch, T, classes, shift settings).

    ``meta.shift=False`` gives plain TSN; ``meta.online=True`` uses the causal one-way shift (the
    offline equivalent of :class:`worker.tsm.online.OnlineRecognizer`).
    """
    if meta.num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {meta.num_segments}")
    if meta.num_classes < 1:
        raise ValueError("model metadata has no labels")
    backbone, dim = build_backbone(meta.arch)
    if meta.shift:
        mode: ShiftMode = "causal" if meta.online else "bidirectional"
        insert_shift(backbone, meta.num_segments, meta.shift_div, meta.shift_place, mode)
    return Recognizer(backbone, dim, meta.num_classes, meta.num_segments, dropout)


def replace_head(model: Recognizer, num_classes: int) -> None:
    """Replace the linear head with a fresh one for ``num_classes`` (fine-tuning, ``--init``)."""
    old = model.head
    model.head = nn.Linear(model.feature_dim, num_classes).to(old.weight.device, old.weight.dtype)
    nn.init.normal_(model.head.weight, 0.0, 0.001)
    nn.init.zeros_(model.head.bias)
