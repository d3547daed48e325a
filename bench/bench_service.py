"""Full-service throughput: one long video vs many short ones, through API + queue + worker + DB.

    .venv/bin/python bench/bench_service.py [--long-minutes 10] [--short 150] [--short-seconds 4]
                                            [--model demo] [--quick] [--json FILE]

Starts a private stack like `vcat up` (embedded Postgres and Redis, the API, one `vcat worker`),
then (a) uploads one long video and (b) uploads many short videos at once, and reports
video-seconds indexed per wall second for each, from the first upload to the last `done`. While
(b) runs it samples the worker's engine statistics (published to Redis by the worker's
housekeeper) to report the inference thread's idle fraction. Target: (b) >= 80% of (a).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import free_port  # noqa: E402
from tests.videos import make_video  # noqa: E402
from vcat import migrate  # noqa: E402
from vcat.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from worker.reconcile import STATS_KEY  # noqa: E402


class Service:
    def __init__(self, root: Path, model: str, model_dir: Path | None) -> None:
        self.root = root
        self.pg = EmbeddedPostgres(root / "postgres")
        self.redis = EmbeddedRedis(root / "redis")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = model
        self.model_dir = model_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Service:
        db, broker = self.pg.start(), self.redis.start()
        migrate.upgrade(db)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VCAT_")}
        env.update(
            VCAT_DATABASE_URL=db, VCAT_BROKER_URL=broker, VCAT_DATA_DIR=str(self.root / "data"),
            VCAT_DEFAULT_MODEL=self.model, VCAT_RECONCILE_SECONDS="1",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )  # fmt: skip
        if self.model_dir is not None:
            env["VCAT_MODEL_DIR"] = str(self.model_dir.resolve())
        log = (self.root / "service.log").open("ab")
        for argv in (
            ["uvicorn", "service.app:app", "--port", str(self.port), "--no-access-log"],
            ["vcat", "worker", "--queues", "cpu", "--loglevel", "WARNING"],
        ):
            self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit("the service did not become ready; see service.log")

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=60)
        self.redis.stop()
        self.pg.stop()

    def upload(self, path: Path) -> str:
        """POST the file as multipart with http.client: a light client, since it shares the
        CPUs with the service (httpx's multipart encoder took 0.75 of a core for 150 uploads)."""
        boundary = uuid.uuid4().hex
        body = b"".join((
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: video/mp4\r\n\r\n'.encode(),
            path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ))  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            content_type = f"multipart/form-data; boundary={boundary}"
            conn.request("POST", "/videos", body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if response.status >= 300:
            raise SystemExit(f"upload of {path.name}: HTTP {response.status} {payload[:200]!r}")
        return str(json.loads(payload)["id"])

    def wait_done(self, ids: list[str], timeout: float) -> float:
        """Seconds of video indexed; raises if any video fails or time runs out.

        One listing request per poll (not one per video: 150 polling GETs would compete with
        the service for the same 2 CPUs)."""
        pending, seconds = set(ids), 0.0
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            params: dict[str, Any] = {"limit": 200}
            while True:
                page = httpx.get(f"{self.url}/videos", params=params, timeout=10).json()
                for v in page["items"]:
                    if v["id"] not in pending:
                        continue
                    if v["status"] == "failed":
                        raise SystemExit(f"video {v['id']} failed: {v['error']}")
                    if v["status"] == "done":
                        pending.discard(v["id"])
                        seconds += float(v["duration"])
                if not page["next_cursor"]:
                    break
                params["cursor"] = page["next_cursor"]
            if pending:
                time.sleep(0.25)
        if pending:
            raise SystemExit(f"{len(pending)} videos not done after {timeout}s")
        return seconds

    def engine_stats(self) -> dict[str, float]:
        client = redis.Redis.from_url(self.redis.url)
        totals = {"busy_seconds": 0.0, "clips": 0.0}
        for key in client.scan_iter(match=STATS_KEY.format(name="*")):
            raw = client.get(key)
            if raw:
                stats = json.loads(raw)
                for k in totals:
                    totals[k] += float(stats[k])
        client.close()
        return totals


def warm_up(svc: Service, path: Path) -> None:
    """Index one tiny video so model loading is not timed."""
    svc.wait_done([svc.upload(path)], timeout=300)


def run(args: argparse.Namespace) -> dict[str, Any]:
    vids = args.cache
    vids.mkdir(parents=True, exist_ok=True)

    def video(name: str, seconds: float, width: int) -> Path:
        """Generated once and kept in --cache (generation is deterministic)."""
        path = vids / f"{name}-{seconds:g}s-{width}.mp4"
        if not path.exists():
            make_video(path.with_suffix(".part.mp4"), duration=seconds, width=width, height=240,
                       fps=25).rename(path)  # fmt: skip
        return path

    long_path = video("long", args.long_minutes * 60, 320)
    shorts = [video(f"short{i:03d}", args.short_seconds, 320 + 2 * i) for i in range(args.short)]
    with tempfile.TemporaryDirectory(prefix="vcat-bench-service-") as tmp:
        root = Path(tmp)
        with Service(root, args.model, args.model_dir) as svc:
            warm_up(svc, video("warm", 2.0, 320))
            began = time.monotonic()
            long_seconds = svc.wait_done([svc.upload(long_path)], timeout=7200)
            a_wall = time.monotonic() - began

            time.sleep(2.5)  # let the housekeeper publish a fresh sample
            before = svc.engine_stats()
            began = time.monotonic()
            with cf.ThreadPoolExecutor(16) as pool:
                ids = list(pool.map(svc.upload, shorts))
            short_seconds = svc.wait_done(ids, timeout=7200)
            b_wall = time.monotonic() - began
            time.sleep(2.5)
            after = svc.engine_stats()
    busy = after["busy_seconds"] - before["busy_seconds"]
    a_rate, b_rate = long_seconds / a_wall, short_seconds / b_wall
    return {
        "model": args.model,
        "a_one_long": {"video_seconds": long_seconds, "wall_seconds": a_wall, "rate": a_rate},
        "b_many_short": {
            "videos": len(shorts),
            "video_seconds": short_seconds,
            "wall_seconds": b_wall,
            "rate": b_rate,
            "inference_idle_fraction": max(0.0, 1.0 - busy / b_wall),
        },
        "b_over_a": b_rate / a_rate,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--short", type=int, default=150)
    ap.add_argument("--short-seconds", type=float, default=4.0)
    ap.add_argument("--model", default="demo", help="model name (default: the bundled demo)")
    ap.add_argument("--model-dir", type=Path, help="model store to use (VCAT_MODEL_DIR)")
    ap.add_argument("--quick", action="store_true", help="2-minute long video, 30 short ones")
    ap.add_argument("--json", type=Path, help="also write the results here")
    cache = Path(tempfile.gettempdir()) / "vcat-bench-service"
    ap.add_argument("--cache", type=Path, default=cache, help="generated videos, kept for reuse")
    args = ap.parse_args()
    if args.quick:
        args.long_minutes, args.short = 2.0, 30
    result = run(args)
    a, b = result["a_one_long"], result["b_many_short"]
    print(f"\nfull service, model {args.model} (video-seconds indexed per wall second)")
    print(f"{'case':<28}{'video s':>10}{'wall s':>10}{'rate':>10}")
    print(f"{'(a) one long video':<28}{a['video_seconds']:>10.1f}{a['wall_seconds']:>10.1f}"
          f"{a['rate']:>10.2f}")  # fmt: skip
    print(f"{'(b) ' + str(b['videos']) + ' short videos':<28}{b['video_seconds']:>10.1f}"
          f"{b['wall_seconds']:>10.1f}{b['rate']:>10.2f}")  # fmt: skip
    print(f"(b)/(a) = {result['b_over_a']:.2f}   (target >= 0.80); inference thread idle during "
          f"(b): {b['inference_idle_fraction']:.0%}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
