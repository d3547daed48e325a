"""Clips/s of ResNet-50-TSM and MobileNetV2-TSM (8x224x224): eager fp32 vs the fast path.

Random weights with randomised BN statistics; both paths run in the same process on the same
uint8 clips, and top-1 agreement between them is reported. Usage::

    .venv/bin/python bench/bench_model.py [--quick] [--json FILE] [--device auto] [--batches 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from worker.tsm.fast import make_predictor
from worker.tsm.meta import ModelMeta
from worker.tsm.preprocess import normalize
from worker.tsm.recognizer import build_model


def _rate(fn: Callable[[], object], clips: int, iters: int) -> float:
    fn()  # warm-up (and JIT trace for the fast path)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return clips * iters / (time.perf_counter() - start)


def run(arch: str, batch: int, iters: int, device: str, precision: str) -> dict[str, object]:
    torch.manual_seed(0)
    meta = ModelMeta("bench", arch, 8, [f"c{i}" for i in range(400)])
    model = build_model(meta).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    clips = torch.randint(0, 256, (batch, 8, 224, 224, 3), dtype=torch.uint8)
    predictor = make_predictor(model, meta, device=device, precision=precision)
    eager_model = model.to(predictor.device)

    def eager() -> torch.Tensor:
        with torch.inference_mode():
            return eager_model(normalize(clips, meta, device=predictor.device)).float().cpu()

    eager_rate = _rate(eager, batch, iters)
    fast_rate = _rate(lambda: predictor(clips), batch, iters)
    # Agreement on fresh random clips (several batches' worth).
    agree, total = 0, 0
    for _ in range(max(1, 16 // batch)):
        clips = torch.randint(0, 256, (batch, 8, 224, 224, 3), dtype=torch.uint8)
        agree += int((eager().argmax(1) == predictor(clips).argmax(1)).sum())
        total += batch
    return {
        "arch": arch, "batch": batch, "device": str(predictor.device),
        "precision": predictor.precision, "eager_fp32_clips_s": round(eager_rate, 3),
        "fast_clips_s": round(fast_rate, 3), "speedup": round(fast_rate / eager_rate, 2),
        "top1_agreement": round(agree / total, 4),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 timed iteration instead of 3")
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--archs", nargs="+", default=["resnet50", "mobilenetv2"])
    args = ap.parse_args()
    iters = 1 if args.quick else 3
    console = Console()
    table = Table(
        title=f"TSM 8x224x224, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for col in ("arch", "batch", "device", "precision", "eager fp32 clips/s", "fast clips/s",
                "speedup", "top-1 agree"):  # fmt: skip
        table.add_column(col)
    results = []
    for arch in args.archs:
        for batch in args.batches:
            r = run(arch, batch, iters, args.device, args.precision)
            results.append(r)
            console.print(r)
            table.add_row(*(str(v) for v in r.values()))
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
