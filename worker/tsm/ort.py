"""ONNX Runtime backend for the CPU fast path.

On the 2-core AVX2 EPYC, ONNX Runtime's CPU kernels run the BN-folded TSM graph 1.3-3x faster
than eager PyTorch fp32 for ResNet-50 (2.5-3x at batch 4) and 3-10x for MobileNetV2
(``bench/bench_model.py``), where TorchScript + oneDNN reached 0.6-1.3x and OpenVINO about
matched ONNX Runtime. The graph takes
the pipeline's uint8 ``(N, T, S, S, 3)`` clips directly: the cast, the layout change and the
normalization are its first nodes, so no float copy is made in Python. The graph is exported to
a temporary directory and loaded when the predictor is created (a few seconds for ResNet-50).
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from worker.tsm.meta import ModelMeta
from worker.tsm.preprocess import check_clips

OPSET = 17


def ort_available() -> bool:
    """True when ``onnxruntime`` and ``onnx`` (for the export) are installed (``worker`` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class _Uint8Input(nn.Module):
    """uint8 ``(N, T, S, S, 3)`` -> normalized ``(N, T, 3, S, S)`` -> ``net``.

    ``(x - 255 mean) * 1 / (255 std)`` equals ``(x / 255 - mean) / std`` up to float rounding,
    with one subtraction and one multiplication in the graph.
    """

    def __init__(self, net: nn.Module, meta: ModelMeta) -> None:
        super().__init__()
        self.net = net
        mean = torch.tensor(meta.mean, dtype=torch.float64).view(1, 1, 3, 1, 1) * 255.0
        std = torch.tensor(meta.std, dtype=torch.float64).view(1, 1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean.float())
        self.register_buffer("inv_std", (1.0 / std).float())

    def forward(self, clips: Tensor) -> Tensor:
        x = clips.permute(0, 1, 4, 2, 3).float()
        return self.net((x - self.mean) * self.inv_std)  # type: ignore[operator]


def export_uint8_onnx(net: nn.Module, meta: ModelMeta) -> bytes:
    """Serialized ONNX graph of ``net`` (fp32, CPU, eval) with uint8 clips in, logits out."""
    wrapped = _Uint8Input(net, meta).eval()
    s = meta.input_size
    example = torch.zeros(2, meta.num_segments, s, s, 3, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation / tracer notes
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            wrapped, (example,), path, input_names=["clips"], output_names=["logits"],
            dynamic_axes={"clips": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )  # fmt: skip
        return path.read_bytes()


def cpu_session(graph: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session: all graph optimizations, ``threads`` intra-op threads.

    Spinning is off: the worker shares its cores with video decoding, and on the 2-core box
    spin-waiting measured no faster.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OrtRunner:
    """uint8 clips ``(N, T, S, S, 3)`` -> float32 logits ``(N, K)`` with ONNX Runtime on the CPU."""

    def __init__(self, net: nn.Module, meta: ModelMeta, threads: int) -> None:
        self.meta = meta
        self.session = cpu_session(export_uint8_onnx(net, meta), threads)

    def __call__(self, clips: Tensor) -> Tensor:
        check_clips(clips, self.meta)
        x = np.ascontiguousarray(clips.detach().cpu().numpy())
        (logits,) = self.session.run(["logits"], {"clips": x})
        return torch.from_numpy(logits)
