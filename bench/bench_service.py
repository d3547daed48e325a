"""Full-service throughput: one long video vs many short ones, through API + queue + worker + DB.

    .venv/bin/python bench/bench_service.py [--long-minutes 10] [--short 150] [--short-seconds 4]
                                            [--repeat 3] [--model demo] [--quick] [--json FILE]
                                            [--set VCAT_NAME=VALUE ...]

Starts a private stack like `vcat up` (embedded Postgres and Redis, the API, one `vcat worker`),
then (a) uploads one long video and (b) uploads many short videos at once, and reports
video-seconds indexed per wall second for each, from the first upload to the last `done`. While
(b) runs it samples the worker's engine statistics (published to Redis by the worker's
housekeeper) to report the inference thread's idle fraction, and the CPU seconds each part of
the stack used, with the share of the machine's CPU time that was idle or stolen by the
hypervisor (on a shared VM the rate follows the steal). Every video is 320x240 at 25 fps.
``--repeat`` rounds alternate (a) and (b) in the same service (deleting the videos in between);
the ratio is of the medians, since one 5 s run of (a) varies by 20% on a shared machine.
Target: (b) >= 80% of (a).

Before the service starts, the same (a) and (b) run through the worker's engine alone, in this
process (built by the worker's own ``worker.tasks._load_engine``; (b) with as many videos in
flight as a worker runs jobs): no HTTP, queue or database. The two ratios side by side split
the gap between the engine's cross-video batching and the per-video cost of the service around
it. ``--no-engine`` skips this.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import statistics
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
from vcat.settings import get_settings  # noqa: E402
from worker.reconcile import STATS_KEY  # noqa: E402


class Service:
    def __init__(
        self, root: Path, model: str, model_dir: Path | None, settings: dict[str, str]
    ) -> None:
        self.root = root
        self.pg = EmbeddedPostgres(root / "postgres")
        self.redis = EmbeddedRedis(root / "redis")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = model
        self.model_dir = model_dir
        self.settings = settings  # extra VCAT_* settings for the API and worker
        self.procs: list[subprocess.Popen[bytes]] = []
        # One client for every poll: a new httpx client per request costs milliseconds of CPU.
        self.http = httpx.Client(base_url=self.url, timeout=10)

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
        env.update(self.settings)
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
        self.http.close()
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

        Polls with two one-item listings (any video still queued? processing?), then reads the
        whole listing once: the load generator shares the 2 CPUs with the service, and listing
        150 videos every poll cost the API and this client more than a core-second per run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(self._list(status=s, limit=1) for s in ("queued", "processing")):
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"videos not done after {timeout}s")
        videos = {v["id"]: v for v in self._list(limit=200, every_page=True)}
        seconds = 0.0
        for vid in ids:
            v = videos.get(vid)
            if v is None or v["status"] != "done":
                state = "missing" if v is None else f"{v['status']}: {v['error']}"
                raise SystemExit(f"video {vid} did not end done ({state})")
            seconds += float(v["duration"])
        return seconds

    def _list(self, every_page: bool = False, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.http.get("/videos", params=params).json()
            items += page["items"]
            if not every_page or not page["next_cursor"]:
                return items
            params["cursor"] = page["next_cursor"]

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each part of the stack (and by this load generator)."""
        postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        assert self.redis.proc is not None
        api, worker = self.procs
        mine = os.times()
        return {
            "api": _cpu_seconds(api.pid),
            "worker": _cpu_seconds(worker.pid),
            "postgres": _cpu_seconds(postmaster),
            "redis": _cpu_seconds(self.redis.proc.pid),
            "client": mine.user + mine.system,
        }

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


def _cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and all its live descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


def _cpu_ticks() -> list[int] | None:
    """The machine's CPU time by state (/proc/stat: user nice system idle iowait irq softirq
    steal), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def _machine(before: list[int] | None) -> dict[str, float] | None:
    """Fractions of the machine's CPU time since ``before`` that were idle, and stolen by the
    hypervisor (time a virtual CPU wanted to run but the host ran something else). A shared VM's
    rate follows its steal, so each round reports both."""
    after = _cpu_ticks()
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    return {"idle": (delta[3] + delta[4]) / total, "steal": delta[7] / total}


def warm_up(svc: Service, path: Path) -> None:
    """Index one tiny video so model loading is not timed."""
    svc.wait_done([svc.upload(path)], timeout=300)


def run(args: argparse.Namespace) -> dict[str, Any]:
    vids = args.cache
    vids.mkdir(parents=True, exist_ok=True)

    def video(name: str, seconds: float, variant: int = 0) -> Path:
        """320x240 at 25 fps, generated once and kept in --cache (generation is deterministic).
        Every short video has the long one's frame size, so (b) decodes the same pixels per
        second as (a); a variant number stamped in a corner keeps their bytes (sha256) apart."""
        path = vids / f"{name}-{seconds:g}s-320x240.mp4"
        if not path.exists():
            make_video(path.with_suffix(".part.mp4"), duration=seconds, width=320, height=240,
                       fps=25, variant=variant).rename(path)  # fmt: skip
        return path

    long_path = video("long", args.long_minutes * 60)
    shorts = [video(f"short{i:03d}", args.short_seconds, i + 1) for i in range(args.short)]
    settings = dict(kv.split("=", 1) for kv in args.set)
    engine = None
    if args.engine:
        # The service's settings for the in-process engine too (batch size, threads, models).
        os.environ.update(settings)
        if args.model_dir is not None:
            os.environ["VCAT_MODEL_DIR"] = str(args.model_dir.resolve())
        get_settings.cache_clear()
        engine = engine_only(args.model, long_path, shorts, args.repeat)
        print(f"engine only: (a) {engine['a_rate_median']:.1f}, (b) {engine['b_rate_median']:.1f} "
              f"video-s/s, (b)/(a) {engine['b_over_a']:.2f}", flush=True)  # fmt: skip
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vcat-bench-service-") as tmp:
        root = Path(tmp)
        with Service(root, args.model, args.model_dir, settings) as svc:
            warm_up(svc, video("warm", 2.0, args.short + 1))
            for _ in range(args.repeat):
                rounds.append(_round(svc, long_path, shorts))
                a, b = rounds[-1]["a_one_long"]["rate"], rounds[-1]["b_many_short"]["rate"]
                print(f"round {len(rounds)}: (a) {a:.1f}, (b) {b:.1f} video-s/s", flush=True)
    a_rate = statistics.median(r["a_one_long"]["rate"] for r in rounds)
    b_rate = statistics.median(r["b_many_short"]["rate"] for r in rounds)
    return {
        "model": args.model,
        "cores": os.cpu_count(),
        "rounds": rounds,
        "a_rate_median": a_rate,
        "b_rate_median": b_rate,
        "b_over_a": b_rate / a_rate,
        "engine_only": engine,
    }


def _round(svc: Service, long_path: Path, shorts: list[Path]) -> dict[str, Any]:
    """(a) then (b) once; both sets are deleted afterwards so the next round indexes anew
    (identical bytes would otherwise be answered with the existing videos)."""
    cpu_before, ticks = svc.cpu(), _cpu_ticks()
    began = time.monotonic()
    long_id = svc.upload(long_path)
    long_seconds = svc.wait_done([long_id], timeout=7200)
    a_wall = time.monotonic() - began
    a_cpu = {k: v - cpu_before[k] for k, v in svc.cpu().items()}
    a_machine = _machine(ticks)

    time.sleep(2.5)  # let the housekeeper publish a fresh sample
    before, cpu_before, ticks = svc.engine_stats(), svc.cpu(), _cpu_ticks()
    began = time.monotonic()
    with cf.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(svc.upload, shorts))
    short_seconds = svc.wait_done(ids, timeout=7200)
    b_wall = time.monotonic() - began
    cpu = {k: v - cpu_before[k] for k, v in svc.cpu().items()}
    b_machine = _machine(ticks)
    time.sleep(2.5)
    busy = svc.engine_stats()["busy_seconds"] - before["busy_seconds"]
    for vid in [long_id, *ids]:
        svc.http.delete(f"/videos/{vid}").raise_for_status()
    return {
        "a_one_long": {
            "video_seconds": long_seconds, "wall_seconds": a_wall, "rate": long_seconds / a_wall,
            "cpu_seconds": a_cpu, "machine": a_machine,
        },
        "b_many_short": {
            "videos": len(shorts),
            "video_seconds": short_seconds,
            "wall_seconds": b_wall,
            "rate": short_seconds / b_wall,
            "inference_idle_fraction": max(0.0, 1.0 - busy / b_wall),
            "cpu_seconds": cpu,  # by part of the stack, during (b)
            "machine": b_machine,
        },
    }  # fmt: skip


def engine_only(model: str, long_path: Path, shorts: list[Path], rounds: int) -> dict[str, Any]:
    """(a) and (b) through one in-process ``IndexEngine``, as a worker builds it."""
    from concurrent.futures import FIRST_COMPLETED, Future, wait

    from worker.tasks import _load_engine

    engine = _load_engine(model)
    in_flight = get_settings().worker_concurrency

    def index(paths: list[Path]) -> dict[str, float]:
        """Video-seconds per wall second (and CPU seconds used), at most ``in_flight`` videos
        submitted at a time."""
        todo, running, seconds = list(paths), set[Future[Any]](), 0.0
        began, cpu = time.monotonic(), time.process_time()
        while todo or running:
            while todo and len(running) < in_flight:
                running.add(engine.submit(todo.pop(0), thumbnails=True).future)
            done, running = wait(running, return_when=FIRST_COMPLETED)
            seconds += sum(f.result().duration for f in done)
        wall = time.monotonic() - began
        return {"rate": seconds / wall, "wall_seconds": wall,
                "cpu_seconds": time.process_time() - cpu}  # fmt: skip

    try:
        index(shorts[:4])  # warm: first-call costs are not timed
        runs = [{"a": index([long_path]), "b": index(shorts)} for _ in range(rounds)]
    finally:
        engine.close()
    a = statistics.median(r["a"]["rate"] for r in runs)
    b = statistics.median(r["b"]["rate"] for r in runs)
    return {"rounds": runs, "a_rate_median": a, "b_rate_median": b, "b_over_a": b / a}


def _cpu_text(case: dict[str, Any], cores: int) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in case["cpu_seconds"].items())
    machine = case.get("machine")
    state = f"; idle {machine['idle']:.0%}, steal {machine['steal']:.0%}" if machine else ""
    return f"{parts} of {case['wall_seconds'] * cores:.1f}{state}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--short", type=int, default=150)
    ap.add_argument("--short-seconds", type=float, default=4.0)
    ap.add_argument("--model", default="demo", help="model name (default: the bundled demo)")
    ap.add_argument("--model-dir", type=Path, help="model store to use (VCAT_MODEL_DIR)")
    ap.add_argument("--quick", action="store_true", help="2-minute long video, 30 short ones")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of (a) then (b); medians")
    ap.add_argument("--set", action="append", default=[], metavar="VCAT_NAME=VALUE",
                    help="a setting for the service's processes (repeatable)")  # fmt: skip
    cache = Path(tempfile.gettempdir()) / "vcat-bench-service"
    ap.add_argument("--cache", type=Path, default=cache, help="generated videos, kept for reuse")
    ap.add_argument("--no-engine", dest="engine", action="store_false",
                    help="skip the engine-only baseline")  # fmt: skip
    args = ap.parse_args()
    if args.quick:
        args.long_minutes, args.short = 2.0, 30
    result = run(args)
    print(f"\nfull service, model {args.model}: video-seconds indexed per wall second")
    print(f"{'round':<7}{'(a) 1 long':>12}{'(b) ' + str(args.short) + ' short':>14}{'(b)/(a)':>9}"
          f"{'idle (b)':>10}  CPU core-s used (of wall x {result['cores']} cores); "
          "the machine's idle and stolen CPU time")  # fmt: skip
    cores = result["cores"]
    for n, r in enumerate(result["rounds"], start=1):
        a, b = r["a_one_long"], r["b_many_short"]
        print(f"{n:<7}{a['rate']:>12.1f}{b['rate']:>14.1f}{b['rate'] / a['rate']:>9.2f}"
              f"{b['inference_idle_fraction']:>10.0%}  (a) {_cpu_text(a, cores)}")  # fmt: skip
        print(f"{'':<52}(b) {_cpu_text(b, cores)}")
    print(f"{'median':<7}{result['a_rate_median']:>12.1f}{result['b_rate_median']:>14.1f}"
          f"{result['b_over_a']:>9.2f}   (target >= 0.80)")  # fmt: skip
    engine = result["engine_only"]
    if engine is not None:
        cpu = " / ".join(f"{r['a']['cpu_seconds']:.1f}, {r['b']['cpu_seconds']:.1f}"
                         for r in engine["rounds"])  # fmt: skip
        print(f"{'engine':<7}{engine['a_rate_median']:>12.1f}{engine['b_rate_median']:>14.1f}"
              f"{engine['b_over_a']:>9.2f}   the worker's engine alone, no API, queue or "
              f"database (medians); CPU core-s (a), (b) by round: {cpu}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
