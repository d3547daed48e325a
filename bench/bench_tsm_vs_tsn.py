"""TSM vs TSN on the synthetic temporal benchmark: same backbone, data, seed and budget.

Trains both (the only difference is the temporal shift), then measures top-1 on clips generated
with a different seed. The paper's finding to reproduce: TSN cannot tell direction, TSM can.

    .venv/bin/python bench/bench_tsm_vs_tsn.py --epochs 5 --input-size 48 --batch-size 4

Or score models trained earlier with the same recipe (the README's numbers: the bundled demo model
and a TSN trained with its exact command plus --no-shift, see docs/TRAINING.md):

    .venv/bin/python bench/bench_tsm_vs_tsn.py --tsm-model demo --tsn-model bench-tsn \
        --test-per-class 20

Writes bench/results/tsm_vs_tsn.json (and the two models to the model store as bench-tsm and
bench-tsn). Existing datasets under --work are reused (generation is deterministic per seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from worker.models import resolve_model
from worker.synth import generate_dataset
from worker.train.config import TrainConfig
from worker.train.data import ClipDataset, load_dataset
from worker.train.evaluate import metrics, predict
from worker.train.loop import train
from worker.tsm.store import load_model


def _dataset(path: Path, per_class: int, seed: int) -> Path:
    if not (path / "flip_map.json").is_file():
        generate_dataset(path, per_class, seed)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("var/synth"))
    ap.add_argument("--train-per-class", type=int, default=60)
    ap.add_argument("--test-per-class", type=int, default=10)
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--test-seed", type=int, default=2)
    ap.add_argument("--arch", default="mobilenetv2")
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--input-size", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", choices=["tsm", "tsn"], help="train and score just one of them")
    ap.add_argument("--tsm-model", help="score this stored TSM model instead of training one")
    ap.add_argument("--tsn-model", help="score this stored TSN model instead of training one")
    ap.add_argument("--out", type=Path, default=Path("bench/results/tsm_vs_tsn.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    train_dir = _dataset(
        args.work / f"train-s{args.train_seed}", args.train_per_class, args.train_seed
    )
    test_dir = _dataset(args.work / f"test-s{args.test_seed}", args.test_per_class, args.test_seed)
    test = load_dataset(test_dir)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name, shift in (("tsm", True), ("tsn", False)):
        if args.only and name != args.only:
            continue
        given = args.tsm_model if name == "tsm" else args.tsn_model
        if given:  # trained earlier (e.g. the bundled demo model): its provenance says how
            model, meta = load_model(resolve_model(given))
            if meta.shift != shift:
                raise SystemExit(f"{given} is {'TSM' if meta.shift else 'TSN'}, not {name}")
            prov = meta.provenance or {}
            seconds = sum(h.get("seconds", 0.0) for h in prov.get("history", []))
            val_top1 = prov.get("val_top1")
            config_json = prov.get("config", {})
        else:
            config = TrainConfig(
                data=train_dir,
                out=f"bench-{name}",
                arch=args.arch,
                segments=args.segments,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.train_seed,
                input_size=args.input_size,
                shift=shift,
                dropout=0.3,
                checkpoint_dir=Path("var/train") / f"bench-{name}",
            )
            t0 = time.monotonic()
            result = train(config)
            seconds = time.monotonic() - t0
            model, meta = load_model(result.model_dir or f"bench-{name}")
            val_top1 = result.history[-1].val_top1
            config_json = config.to_json()
        clips = ClipDataset(
            test,
            range(len(test.items)),
            meta.num_segments,
            meta.input_size,
            meta.resize_short,
            train=False,
            labels=meta.labels,
        )
        logits, targets = predict(model, clips, meta, torch.device("cpu"))
        m = metrics(logits, targets, list(meta.labels))
        results[name] = {
            "test_top1": m.top1,
            "test_top5": m.top5,
            "per_class": m.per_class,
            "train_seconds": round(seconds, 1),
            "val_top1": val_top1,
            "config": config_json,
            "model": given or f"bench-{name}",
            "test": {"dir": str(test_dir), "clips": m.count},
        }
        print(
            f"{name}: test top-1 {100 * m.top1:.1f}% ({m.count} clips, seed {args.test_seed}), "
            f"trained in {seconds / 60:.1f} min"
        )
    print(f"\n{'':6}{'test top-1':>12}{'test top-5':>12}{'val top-1':>11}{'train min':>11}")
    for name in ("tsm", "tsn"):
        if name in results:
            r = results[name]
            val = f"{100 * r['val_top1']:.1f}%" if r["val_top1"] is not None else "-"
            print(f"{name.upper():6}{100 * r['test_top1']:>11.1f}%{100 * r['test_top5']:>11.1f}%"
                  f"{val:>11}{r['train_seconds'] / 60:>11.1f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
