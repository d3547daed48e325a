"""Benchmark the video pipeline against the model-only ceiling and a naive pipeline.

On a generated 1280x720 H.264 video, for ResNet-50-TSM and MobileNetV2-TSM (random weights):
  ceiling  the predictor alone on pre-decoded clips (batches of B), no decoding at all
  index    ``worker.video.pipeline.index_video`` end to end (what ``vcat index`` runs)
  naive    decode every frame to full-resolution RGB, resize in torch, one clip per forward
Reports video-seconds indexed per wall second, and peak RSS indexing a long vs a short video
(each in its own subprocess, read from ru_maxrss). Table on stdout, JSON with ``--json``.

    python bench/bench_pipeline.py [--minutes 5] [--quick] [--json bench/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from worker.tsm.fast import default_batch_size, make_predictor  # noqa: E402
from worker.tsm.meta import ModelMeta  # noqa: E402
from worker.tsm.recognizer import build_model  # noqa: E402
from worker.video.decode import scan_timeline  # noqa: E402
from worker.video.pipeline import index_video  # noqa: E402
from worker.video.sampling import frame_for_time  # noqa: E402

FPS = 25


def generate(path: Path, minutes: float, width: int = 1280, height: int = 720) -> Path:
    """A moving square over a textured background, H.264 (x264 veryfast, GOP 250)."""
    if path.exists():
        return path
    yy, xx = np.mgrid[0:height, 0:width]
    bg = (96 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.uint8)
    base = np.stack([bg, bg, bg], axis=-1)
    frames = round(minutes * 60 * FPS)
    side = height // 4
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "g": "250"}
        for i in range(frames):
            img = base.copy()
            x = (i * 7) % (width - side)
            y = (height - side) // 2 + int(40 * np.sin(i / 20))
            img[y : y + side, x : x + side] = (220, 30, 30)
            frame = av.VideoFrame.from_ndarray(img, "rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def model_meta(arch: str) -> ModelMeta:
    labels = [f"class{i}" for i in range(400)]
    return ModelMeta(name=f"bench-{arch}", arch=arch, num_segments=8, labels=labels)


def ceiling(predictor: Any, meta: ModelMeta, clips: int, batch: int, seconds: float) -> float:
    x = torch.randint(0, 256, (batch, meta.num_segments, 224, 224, 3), dtype=torch.uint8)
    last = clips % batch or batch
    predictor(x)  # warm up (tracing) for both shapes
    predictor(x[:last])
    start = time.perf_counter()
    for done in range(0, clips, batch):
        predictor(x[: min(batch, clips - done)])
    return seconds / (time.perf_counter() - start)


def naive(predictor: Any, meta: ModelMeta, path: Path) -> float:
    """Full-res RGB for every frame, torch resize of the sampled ones, batch of one."""
    predictor(torch.zeros((1, meta.num_segments, 224, 224, 3), dtype=torch.uint8))
    start = time.perf_counter()
    window_frames = round(meta.window_seconds * FPS)
    buf: list[np.ndarray] = []

    def run(frames: list[np.ndarray]) -> None:
        times = [i / FPS for i in range(len(frames))]
        step = len(frames) / FPS / meta.num_segments
        picked = [frames[frame_for_time(times, (i + 0.5) * step)] for i in range(meta.num_segments)]
        x = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float()
        h, w = x.shape[2:]
        s = meta.resize_short / min(h, w)
        x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=False)
        y0, x0 = (x.shape[2] - 224) // 2, (x.shape[3] - 224) // 2
        x = x[:, :, y0 : y0 + 224, x0 : x0 + 224].round().clamp(0, 255).to(torch.uint8)
        predictor(x.permute(0, 2, 3, 1)[None].contiguous())

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            buf.append(frame.to_ndarray(format="rgb24"))
            if len(buf) == window_frames:
                run(buf)
                buf = []
    if buf:
        run(buf)
    return scan_timeline(path).duration / (time.perf_counter() - start)


def rss_child(path: str, arch: str) -> None:
    meta = model_meta(arch)
    torch.manual_seed(0)
    predictor = make_predictor(build_model(meta), meta, device="auto", precision="auto")
    batch = default_batch_size(predictor.device)
    # Model setup (weights, tracing) peaks the same for any video; record it apart.
    predictor(torch.zeros((batch, meta.num_segments, 224, 224, 3), dtype=torch.uint8))
    setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    index_video(path, predictor, meta, batch_size=batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"maxrss_mib": peak, "setup_mib": setup}))


def measure_rss(path: Path, arch: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(path), "--arch", arch],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {k: float(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="length of the benchmark video")
    ap.add_argument(
        "--quick", action="store_true", help="15 s video; RSS on 6 vs 1 minutes at 640x360"
    )
    ap.add_argument("--archs", default="resnet50,mobilenetv2", help="'' for RSS only")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    ap.add_argument("--rss-long", type=float, default=60.0, help="minutes of the long RSS video")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vcat-bench")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--arch", default="mobilenetv2", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.arch)
        return
    minutes = 0.25 if args.quick else args.minutes
    rss_long = 6.0 if args.quick else args.rss_long
    args.cache.mkdir(parents=True, exist_ok=True)
    video = generate(args.cache / f"bench_{minutes:g}min_720p.mp4", minutes)
    seconds = scan_timeline(video).duration
    results: dict[str, Any] = {
        "video": {"minutes": minutes, "size": "1280x720", "codec": "h264", "fps": FPS},
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "repeat": args.repeat,
        "models": {},
    }
    for arch in filter(None, args.archs.split(",")):
        meta = model_meta(arch)
        torch.manual_seed(0)
        predictor = make_predictor(build_model(meta), meta, device="auto", precision="auto")
        batch = default_batch_size(predictor.device)
        n = len(index_video(video, predictor, meta, batch_size=batch).clips)  # warm up
        # Best of --repeat, interleaved: the machine may be shared, and the best run is the
        # one least disturbed by others.
        ceil = e2e = naive_rate = 0.0
        for _ in range(args.repeat):
            start = time.perf_counter()
            index_video(video, predictor, meta, batch_size=batch)
            e2e = max(e2e, seconds / (time.perf_counter() - start))
            ceil = max(ceil, ceiling(predictor, meta, n, batch, seconds))
            naive_rate = max(naive_rate, naive(predictor, meta, video))
        results["models"][arch] = {
            "device": str(predictor.device),
            "precision": predictor.precision,
            "batch": batch,
            "clips": n,
            "ceiling_vs_per_s": ceil,
            "index_vs_per_s": e2e,
            "naive_vs_per_s": naive_rate,
            "index_over_ceiling": e2e / ceil,
            "index_over_naive": e2e / naive_rate,
        }
    if not args.no_rss:
        w, h = (640, 360) if args.quick else (1280, 720)
        short = generate(args.cache / f"rss_1min_{h}p.mp4", 1.0, w, h)
        long = generate(args.cache / f"rss_{rss_long:g}min_{h}p.mp4", rss_long, w, h)
        r_short, r_long = measure_rss(short, "mobilenetv2"), measure_rss(long, "mobilenetv2")
        results["rss"] = {
            "model": "mobilenetv2",
            "size": f"{w}x{h}",
            "short_minutes": 1.0,
            "long_minutes": rss_long,
            "short_mib": r_short["maxrss_mib"],
            "long_mib": r_long["maxrss_mib"],
            "ratio": r_long["maxrss_mib"] / r_short["maxrss_mib"],
            # growth of the peak beyond model setup: what indexing itself adds
            "short_index_mib": r_short["maxrss_mib"] - r_short["setup_mib"],
            "long_index_mib": r_long["maxrss_mib"] - r_long["setup_mib"],
        }
    print(f"video: {minutes:g} min 1280x720 h264 @ {FPS} fps ({seconds:.1f} s)")
    print(f"{'model':<12} {'dev':<5} {'B':>3} {'ceiling':>9} {'index':>9} {'naive':>9} "
          f"{'idx/ceil':>9} {'idx/naive':>9}   (video-seconds per wall second)")  # fmt: skip
    for arch, r in results["models"].items():
        print(
            f"{arch:<12} {r['device']:<5} {r['batch']:>3} {r['ceiling_vs_per_s']:>9.2f} "
            f"{r['index_vs_per_s']:>9.2f} {r['naive_vs_per_s']:>9.2f} "
            f"{r['index_over_ceiling']:>9.2f} {r['index_over_naive']:>9.2f}"
        )
    if "rss" in results:
        r = results["rss"]
        print(
            f"peak RSS ({r['model']}, {r['size']}): {r['long_minutes']:g} min "
            f"{r['long_mib']:.0f} MiB, 1 min {r['short_mib']:.0f} MiB, ratio {r['ratio']:.2f} "
            f"(above model setup: {r['long_index_mib']:.0f} vs {r['short_index_mib']:.0f} MiB)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
