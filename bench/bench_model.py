"""Clips/s of ResNet-50-TSM and MobileNetV2-TSM (8x224x224): eager fp32 vs the fast path.

Random weights with randomised BN statistics. Eager fp32 (``model.eval()``, inference mode) and
each predictor run in the same process on the same uint8 clips, interleaved, ``iters`` times;
the median time per call gives clips/s, so the speedups come from one noisy run together. Rows:
``fast`` is what ``make_predictor`` picks by default (its backend in brackets); ``unfused`` is
the same TorchScript path without oneDNN Graph fusion (where the fast path is TorchScript on the
CPU), so the fusion's gain is measured in the same run; ``--backends`` adds forced backends
(``torch``, ``onnxruntime``). Top-1 agreement with eager is measured on fresh
random clips. Usage::

    .venv/bin/python bench/bench_model.py [--quick] [--json FILE] [--device auto]
        [--batches 1 4 16] [--archs resnet50 mobilenetv2] [--backends torch onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from worker.tsm.fast import JIT_WARM_CALLS, Predictor, make_predictor
from worker.tsm.meta import ModelMeta
from worker.tsm.preprocess import normalize
from worker.tsm.recognizer import Recognizer, build_model

Run = Callable[[torch.Tensor], torch.Tensor]


def _model(arch: str) -> tuple[Recognizer, ModelMeta]:
    torch.manual_seed(0)
    meta = ModelMeta("bench", arch, 8, [f"c{i}" for i in range(400)])
    model = build_model(meta).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model, meta


def _clips(batch: int) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 8, 224, 224, 3), dtype=torch.uint8)


def _median_seconds(runs: dict[str, Run], clips: torch.Tensor, iters: int) -> dict[str, float]:
    """Median seconds per call of each run, calls interleaved, after warm-up (a predictor's
    JIT_WARM_CALLS: its traced graphs are fused by then)."""
    for fn in runs.values():  # warm-up: JIT trace and fusion / ORT arena allocation
        for _ in range(JIT_WARM_CALLS if isinstance(fn, Predictor) else 1):
            fn(clips)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(iters):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(clips)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run(
    arch: str, batch: int, iters: int, agree_clips: int, device: str, precision: str,
    backends: list[str],
) -> list[dict[str, object]]:  # fmt: skip
    model, meta = _model(arch)
    predictors: dict[str, Predictor] = {"fast": make_predictor(model, meta, device, precision)}
    if predictors["fast"].jit:
        predictors["unfused"] = make_predictor(model, meta, device, precision, fuse=False)
    for backend in backends:
        if backend != predictors["fast"].backend:
            # ONNX Runtime runs fp32 only: compared as such even when the fast path is bf16
            prec = "fp32" if backend == "onnxruntime" else precision
            predictors[backend] = make_predictor(model, meta, device, prec, backend=backend)
    dev = predictors["fast"].device
    eager_model = model.to(dev)

    def eager(clips: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return eager_model(normalize(clips, meta, device=dev)).float().cpu()

    runs: dict[str, Run] = {"eager": eager, **predictors}
    seconds = _median_seconds(runs, _clips(batch), iters)
    agree = dict.fromkeys(predictors, 0)
    max_diff = dict.fromkeys(predictors, 0.0)
    total = 0
    while total < agree_clips:
        clips = _clips(batch)
        want = eager(clips)
        for name, predictor in predictors.items():
            got = predictor(clips)
            agree[name] += int((want.argmax(1) == got.argmax(1)).sum())
            max_diff[name] = max(max_diff[name], float((got - want).abs().max()))
        total += batch
    rows = []
    for name, predictor in predictors.items():
        rows.append({
            "arch": arch, "batch": batch, "path": name, "backend": predictor.backend,
            "device": str(predictor.device), "precision": predictor.precision,
            "eager_fp32_clips_s": round(batch / seconds["eager"], 3),
            "clips_s": round(batch / seconds[name], 3),
            "speedup": round(seconds["eager"] / seconds[name], 2),
            "top1_agreement": round(agree[name] / total, 4),
            "max_abs_diff": float(f"{max_diff[name]:.2e}"),
        })  # fmt: skip
    return rows


def demo_agreement(data: Path | None, device: str, precision: str) -> dict[str, object]:
    """Top-1 agreement of the fast path with eager fp32 on the bundled demo model, over real
    synthetic clips (``data``: a ``vcat synth`` folder; default: 10 fresh clips per class)."""
    from worker.models import resolve_model
    from worker.synth import generate_dataset
    from worker.train.data import ClipDataset, load_dataset
    from worker.tsm.store import load_model

    model, meta = load_model(resolve_model("demo"))
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = Path(tmp) / "clips"
            generate_dataset(data, 10, seed=4242)
        ds = load_dataset(data)
        clips = ClipDataset(ds, range(len(ds.items)), meta.num_segments, meta.input_size,
                            meta.resize_short, train=False, labels=meta.labels)  # fmt: skip
        x = torch.stack([clips[i][0] for i in range(len(clips))])
    fast = make_predictor(model, meta, device, precision)
    with torch.inference_mode():
        eager = model.eval()(normalize(x, meta)).float()
    got = torch.cat([fast(x[i : i + 4]) for i in range(0, len(x), 4)])
    return {"model": "demo", "clips": len(x), "backend": fast.backend,
            "precision": fast.precision,
            "top1_agreement": float((got.argmax(1) == eager.argmax(1)).float().mean()),
            "max_abs_diff": float((got - eager).abs().max())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="3 timed calls instead of 5; agreement on 4 clips"
    )
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--archs", nargs="+", default=["resnet50", "mobilenetv2"])
    ap.add_argument(
        "--backends", nargs="*", default=["torch"], help="forced backends to add beside the default"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--demo-data", type=Path, help="vcat synth folder for the demo agreement")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    iters, agree_clips = (3, 4) if args.quick else (5, 16)
    console = Console(width=max(Console().width, 150))  # the table has 11 columns
    table = Table(
        title=f"TSM 8x224x224, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {iters} interleaved calls"
    )
    columns = ("arch", "batch", "path", "backend", "device", "precision", "eager fp32 clips/s",
               "clips/s", "speedup", "top-1 agree", "max |diff|")  # fmt: skip
    for col in columns:
        table.add_column(col)
    results = []
    for arch in args.archs:
        for batch in args.batches:
            rows = run(arch, batch, iters, agree_clips, args.device, args.precision, args.backends)
            for r in rows:
                results.append(r)
                console.print(json.dumps(r), soft_wrap=True)
                table.add_row(*(str(v) for v in r.values()))
    console.print(table)
    demo = demo_agreement(args.demo_data, args.device, args.precision)
    agree, diff = demo["top1_agreement"], demo["max_abs_diff"]
    console.print(f"demo model, {demo['clips']} synthetic clips: fast ({demo['backend']}, "
                  f"{demo['precision']}) vs eager fp32 top-1 agreement {agree:.1%}, "
                  f"max |diff| {diff:.2g}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "demo": demo}, indent=2) + "\n")


if __name__ == "__main__":
    main()
