"""Fast inference with eager-fp32 results: BN folding, channels_last, reduced precision, JIT.

``make_predictor(model, meta)`` returns a :class:`Predictor`; ``predictor(clips_uint8)`` takes the
pipeline's uint8 ``(N, T, S, S, 3)`` clips and returns float32 logits ``(N, K)`` on the CPU.
What it does per device:

- always: a private copy of the model, eval, ``torch.inference_mode``, batch norm folded into the
  preceding convolutions (exact up to float rounding), normalization done on the device;
- torch backend: channels_last everywhere;
- CUDA: autocast fp16 (``precision=auto``) or bf16, optional ``torch.compile``;
- CPU: fp32 unless the CPU has native bf16 (AMX / AVX512-BF16), where ``auto`` picks bf16.
  fp32 runs on ONNX Runtime when it is installed (:mod:`worker.tsm.ort`; 1.3-3x eager for
  ResNet-50 on the 2-core AVX2 box, against 0.6-1.3x for TorchScript); otherwise, and for bf16,
  the folded graph is traced and frozen with TorchScript, and oneDNN Graph fuses each convolution
  with the activation and add after it (``Predictor.fuse``); ``compile=True`` uses ``torch.compile``
  instead. ``backend`` forces ``torch`` or ``onnxruntime``.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from worker.tsm.meta import ModelMeta
from worker.tsm.ort import OrtRunner, ort_available
from worker.tsm.preprocess import normalize
from worker.tsm.recognizer import Recognizer
from worker.tsm.shift import TemporalShift

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
BACKENDS = ("auto", "torch", "onnxruntime")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
JIT_WARM_CALLS = 2  # profile, then optimize (fuse) and run: calls until a shape's graph is final


# -------------------------------------------------------------------------------- BN folding


def _conv_of(m: nn.Module) -> nn.Conv2d | None:
    if isinstance(m, TemporalShift):
        m = m.net
    return m if isinstance(m, nn.Conv2d) else None


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every conv -> BatchNorm2d pair in place (BN becomes Identity); returns ``model``.

    Pairs are named siblings (``convK`` / ``bnK``, as in ResNet blocks and the stem) and adjacent
    entries of ``nn.Sequential`` (MobileNetV2, ResNet downsample). Needs eval-mode statistics.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name.startswith("bn") and isinstance(child, nn.BatchNorm2d):
                conv = _conv_of(getattr(module, "conv" + name[2:], nn.Identity()))
                if conv is not None:
                    _fold_pair(conv, child)
                    setattr(module, name, nn.Identity())
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = _conv_of(module[i]), module[i + 1]
                if conv is not None and isinstance(bn, nn.BatchNorm2d):
                    _fold_pair(conv, bn)
                    module[i + 1] = nn.Identity()
    return model


# ------------------------------------------------------------------------------------ devices


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> first CUDA device if available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slow."""
    try:
        flags = open("/proc/cpuinfo").read()  # noqa: SIM115
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("fp16 is not supported on the CPU; use fp32 or bf16")
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def resolve_backend(backend: str, device: torch.device, precision: str, compile: bool) -> str:
    """``auto`` -> ``onnxruntime`` for uncompiled fp32 on the CPU when installed, else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    ort_ok = device.type == "cpu" and precision == "fp32" and not compile
    if backend == "onnxruntime":
        if not ort_ok:
            raise ValueError("the onnxruntime backend runs fp32 on the CPU only, without compile")
        if not ort_available():
            raise ValueError("the onnxruntime backend needs onnx and onnxruntime (worker extra)")
        return backend
    if backend == "auto":
        return "onnxruntime" if ort_ok and ort_available() else "torch"
    return backend


def cpu_threads(requested: int = 0, decoders: int = 2) -> int:
    """Intra-op threads for CPU inference beside ``decoders`` busy decode threads: ``requested``,
    or (0) the cores left to it. Oversubscribed, torch's OpenMP threads spin against the decoders:
    on 2 cores, 1 thread indexed 15-20% more video per second than 2, for long and short videos.
    """
    return requested or max(1, (os.cpu_count() or 1) - decoders)


def default_batch_size(device: torch.device | str = "auto") -> int:
    """Clips per forward: 4 on the CPU (throughput flat beyond), by memory on CUDA."""
    dev = resolve_device(device) if isinstance(device, str) else device
    if dev.type != "cuda":
        return 4
    gib = torch.cuda.get_device_properties(dev).total_memory / 2**30
    return 64 if gib >= 40 else 32 if gib >= 16 else 8


# ---------------------------------------------------------------------------------- predictor


@dataclass
class Predictor:
    """Callable: uint8 clips ``(N, T, S, S, 3)`` -> float32 logits ``(N, K)`` on the CPU.

    ``model`` is the folded network; with ``ort`` set, ONNX Runtime runs it instead of PyTorch.
    """

    model: nn.Module
    meta: ModelMeta
    device: torch.device
    precision: str
    channels_last: bool
    jit: bool
    ort: OrtRunner | None = None
    # oneDNN Graph fuses each convolution with the ReLU/ReLU6 and add after it. Unfused, each
    # activation is a separate ATen pass over the tensor: in bf16 those took about 40% of
    # MobileNetV2-TSM's time (the bf16 clamp kernel alone was 8% of a worker's CPU under perf), so
    # bf16 ran slower than fp32 on ONNX Runtime. Where oneDNN has no kernel (bf16 without native
    # bf16) the graph stays unfused. TorchScript's switch is process-wide: each JIT call sets its
    # predictor's value first, and a graph keeps the plan it was optimized with, fused or not.
    fuse: bool = True
    _traced: dict[tuple[int, ...], Callable[[Tensor], Tensor]] = field(default_factory=dict)

    def _runner(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        if not self.jit:
            return self.model
        key = tuple(x.shape)
        if key not in self._traced:
            with warnings.catch_warnings():  # shape checks are constant per traced input shape
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(self.model, x, check_trace=False)
            self._traced[key] = torch.jit.freeze(traced.eval())
        return self._traced[key]

    @property
    def backend(self) -> str:
        return "torch" if self.ort is None else "onnxruntime"

    def warm_up(self, max_batch: int) -> None:
        """Run every batch size up to ``max_batch`` until its graph is final: the JIT path traces
        one graph per input shape, and a shape first met mid-job cost that job the trace (about
        0.5 s for MobileNetV2; 18% of a worker's time over 150 short videos, before this). The
        profiling executor then builds the fused graph on a shape's second call (0.25 s for
        MobileNetV2), which runs it (``JIT_WARM_CALLS``)."""
        size = self.meta.input_size
        sizes = range(1, max_batch + 1) if self.jit else [max_batch]
        for n in sizes:
            clips = torch.zeros((n, self.meta.num_segments, size, size, 3), dtype=torch.uint8)
            for _ in range(JIT_WARM_CALLS if self.jit else 1):
                self(clips)

    def __call__(self, clips: Tensor) -> Tensor:
        if self.ort is not None:
            return self.ort(clips)
        dtype = _DTYPES[self.precision]
        autocast = self.device.type == "cuda" and self.precision != "fp32"
        with torch.inference_mode():
            x = normalize(clips, self.meta, torch.float32 if autocast else dtype, self.device)
            if self.channels_last:
                n, t = x.shape[:2]
                x = (
                    x.flatten(0, 1)
                    .contiguous(memory_format=torch.channels_last)
                    .unflatten(0, (n, t))
                )
            if self.jit:
                torch.jit.enable_onednn_fusion(self.fuse)
            with torch.autocast(self.device.type, dtype=dtype, enabled=autocast):
                logits = self._runner(x)(x)
            return logits.float().cpu()


def make_predictor(
    model: Recognizer, meta: ModelMeta, device: str = "auto", precision: str = "auto",
    compile: bool = False, backend: str = "auto", fuse: bool = True,
) -> Predictor:  # fmt: skip
    """Build the fast path for ``model`` (left untouched: the predictor works on a copy).
    ``fuse=False`` leaves the CPU's TorchScript graph unfused (for comparison only)."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    chosen = resolve_backend(backend, dev, prec, compile)
    fast = fold_batchnorm(copy.deepcopy(model).eval())
    for p in fast.parameters():
        p.requires_grad_(False)
    if chosen == "onnxruntime":
        runner_ort = OrtRunner(fast.float().cpu(), meta, threads=torch.get_num_threads())
        return Predictor(fast, meta, dev, prec, channels_last=False, jit=False, ort=runner_ort)
    cuda = dev.type == "cuda"
    # channels_last helps cuDNN and oneDNN alike (about +7% on the 2-core AVX2 CPU).
    fast = fast.to(dev).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if not cuda and prec == "bf16":
        fast = fast.to(torch.bfloat16)
    runner: nn.Module = fast
    if compile:
        runner = torch.compile(fast, dynamic=False)  # type: ignore[assignment]
    jit = not cuda and not compile
    return Predictor(runner, meta, dev, prec, channels_last=True, jit=jit, fuse=fuse)
