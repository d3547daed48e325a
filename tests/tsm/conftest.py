"""Shared helpers for the TSM tests: tiny random models with non-trivial BatchNorm statistics."""

from __future__ import annotations

import torch
from torch import nn

from worker.tsm.meta import ModelMeta
from worker.tsm.recognizer import Recognizer, build_model


def make_model(
    arch: str, segments: int = 4, classes: int = 5, seed: int = 0, **kw: object
) -> tuple[Recognizer, ModelMeta]:
    """A random-weight model in eval mode whose BN layers are not identity transforms."""
    torch.manual_seed(seed)
    meta = ModelMeta(
        name="t", arch=arch, num_segments=segments, labels=[f"c{i}" for i in range(classes)], **kw
    )  # type: ignore[arg-type]
    model = build_model(meta)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval(), meta
