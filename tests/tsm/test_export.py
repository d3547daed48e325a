from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tsm.conftest import make_model
from worker.tsm.export import export_onnx

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_onnx_round_trip(arch: str, tmp_path: Path) -> None:
    model, meta = make_model(arch, segments=4, input_size=64)
    path = export_onnx(model, meta, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 4, 3, 64, 64)  # batch differs from the export example: dynamic axis
    (got,) = session.run(None, {"clips": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert abs(got - want).max() <= 1e-4
