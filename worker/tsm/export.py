"""ONNX export of a recognizer: input ``clips`` (N, T, 3, S, S) float32 normalized, output logits.

The batch axis is dynamic; T and S are fixed by the model metadata. The shift's slice + concat
formulation exports as plain Slice/Concat nodes.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from worker.tsm.meta import ModelMeta
from worker.tsm.recognizer import Recognizer


def export_onnx(model: Recognizer, meta: ModelMeta, path: Path, opset: int = 17) -> Path:
    """Write ``model`` to ``path`` as ONNX (batch dimension dynamic); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).eval().float().cpu()
    s = meta.input_size
    example = torch.zeros(2, meta.num_segments, 3, s, s)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation / tracer notes
        warnings.simplefilter("ignore")
        _export(net, example, path, opset)
    return path


def _export(net: Recognizer, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        net, (example,), str(path), input_names=["clips"], output_names=["logits"],
        dynamic_axes={"clips": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
        dynamo=False,
    )  # fmt: skip
