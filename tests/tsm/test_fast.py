from __future__ import annotations

import copy

import pytest
import torch

from tests.tsm.conftest import make_model
from worker.tsm.fast import (
    cpu_has_native_bf16,
    default_batch_size,
    fold_batchnorm,
    make_predictor,
    resolve_backend,
    resolve_precision,
)
from worker.tsm.ort import ort_available
from worker.tsm.preprocess import normalize


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenetv2"])
def test_folded_matches_unfolded(arch: str) -> None:
    model, _ = make_model(arch, segments=4)
    x = torch.randn(2, 4, 3, 64, 64)

    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert (model(x) - folded(x)).abs().max().item() <= 1e-4


needs_ort = pytest.mark.skipif(not ort_available(), reason="onnxruntime is not installed")


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnxruntime", marks=needs_ort)])
def test_predictor_matches_eager_on_uint8_clips(backend: str) -> None:
    model, meta = make_model("resnet18", segments=4, input_size=64)
    clips = torch.randint(0, 256, (3, 4, 64, 64, 3), dtype=torch.uint8)
    predictor = make_predictor(model, meta, device="cpu", precision="fp32", backend=backend)
    assert predictor.backend == backend
    got = predictor(clips)
    with torch.no_grad():
        want = model(normalize(clips, meta))
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert (got - want).abs().max().item() <= 1e-4
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched
    with pytest.raises(ValueError, match="do not match model"):
        predictor(torch.zeros(1, 3, 64, 64, 3, dtype=torch.uint8))


def _fusion_groups() -> int:
    """oneDNN Graph partitions in the graph TorchScript ran last (on this thread)."""
    graph = torch.jit.last_executed_optimized_graph()
    return sum(node.kind() == "prim::oneDNNFusionGuard" for node in graph.nodes())


needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="no native bf16 on this CPU")


@pytest.mark.parametrize(
    ("arch", "precision", "tolerance"),
    [
        ("mobilenetv2", "fp32", 1e-4),
        ("resnet18", "fp32", 1e-4),
        pytest.param("mobilenetv2", "bf16", 0.05, marks=needs_bf16),
    ],
)
def test_cpu_jit_runs_fused_after_warm_up(arch: str, precision: str, tolerance: float) -> None:
    """warm_up runs each shape until it runs the fused graph (so no job's batch pays for the
    fusion), fused results match eager, and fuse=False leaves the graph unfused."""
    model, meta = make_model(arch, segments=4, input_size=64)
    fused = make_predictor(model, meta, device="cpu", precision=precision, backend="torch")
    plain = make_predictor(
        model, meta, device="cpu", precision=precision, backend="torch", fuse=False
    )
    fused.warm_up(2)
    assert _fusion_groups() > 0  # warm-up's last call (batch 2) ran the fused graph
    clips = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        want = model(normalize(clips, meta))
    got = fused(clips)
    assert _fusion_groups() > 0
    assert (got - want).abs().max().item() <= tolerance
    assert torch.equal(got.argmax(1), want.argmax(1))
    for _ in range(3):  # interleaved: each keeps its own plan
        plain_got = plain(clips)
        assert _fusion_groups() == 0
        assert (plain_got - want).abs().max().item() <= tolerance
        assert torch.equal(fused(clips), got)
        assert _fusion_groups() > 0


def test_precision_and_batch_rules() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) in ("fp32", "bf16")
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", cpu)
    assert default_batch_size("cpu") == 4


@needs_ort
@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv2"])
def test_onnxruntime_backend_matches_eager(arch: str) -> None:
    model, meta = make_model(arch, segments=4, classes=10, seed=1, input_size=64)
    predictor = make_predictor(model, meta, device="cpu", precision="fp32", backend="onnxruntime")
    for batch in (1, 5):  # neither is the export example's batch: the batch axis is dynamic
        clips = torch.randint(0, 256, (batch, 4, 64, 64, 3), dtype=torch.uint8)
        got = predictor(clips)
        with torch.inference_mode():
            want = model(normalize(clips, meta))
        assert got.shape == want.shape and got.dtype == torch.float32
        assert (got - want).abs().max().item() <= 1e-3
        assert torch.equal(got.argmax(1), want.argmax(1))


def test_backend_rules() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    default_cpu = "onnxruntime" if ort_available() else "torch"
    assert resolve_backend("auto", cpu, "fp32", compile=False) == default_cpu
    assert resolve_backend("auto", cpu, "bf16", compile=False) == "torch"
    assert resolve_backend("auto", cpu, "fp32", compile=True) == "torch"
    assert resolve_backend("auto", cuda, "fp16", compile=False) == "torch"
    assert resolve_backend("torch", cpu, "fp32", compile=False) == "torch"
    with pytest.raises(ValueError, match="fp32 on the CPU only"):
        resolve_backend("onnxruntime", cpu, "bf16", compile=False)
    with pytest.raises(ValueError, match="fp32 on the CPU only"):
        resolve_backend("onnxruntime", cuda, "fp32", compile=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorrt", cpu, "fp32", compile=False)
