"""Search benchmark: 1M clip scores, 32 concurrent clients, mixed /search queries.

    .venv/bin/python bench/bench_search.py [--videos 10000] [--clips 20] [--seconds 30]
                                           [--servers vcat uvicorn]

Seeds (in SQL) 10k videos x 20 clips x top-5 = 1,000,000 clip scores over the 400 Kinetics
action names, in scenes of a few clips so segments form; starts the API on the seeded database
(``vcat api``, as users run it; ``--servers vcat uvicorn`` also runs plain ``uvicorn --workers``
after it for comparison); then 32 clients issue a mix of exact, fuzzy, sort=time, per-video and
two-action searches for the given time and the script prints p50/p99 latency and requests/s.
Uses VCAT_DATABASE_URL if set (a scratch database is created and dropped there), else an
embedded Postgres in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import uvloop
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.db import normalize_database_url  # noqa: E402
from service.index_writer import ensure_model, rebuild_segments  # noqa: E402
from tests.support import free_port, start_api  # noqa: E402
from vcat import migrate  # noqa: E402

SERVERS = {
    "vcat": "vcat api (a socket per process)",
    "uvicorn": "uvicorn --workers (one shared socket)",
}
LABELS_FILE = REPO.parent / "shared" / "labels" / "kinetics400.txt"

SEED_SQL = [
    """INSERT INTO videos (id, source, size, status, progress, created_at, model_id)
       SELECT md5('v' || i)::uuid, 'upload', 1000000, 'done', 1,
              now() - i * interval '1 minute', :model_id
       FROM generate_series(1, :videos) AS i""",
    """INSERT INTO clips (video_id, idx, start, "end")
       SELECT v.id, c, c * 2.0, c * 2.0 + 2.0 FROM videos v, generate_series(0, :clips - 1) c""",
    # A video has a base action; each 4-clip scene a top-1 action, ranks 2..5 spread from it.
    """INSERT INTO clip_scores (video_id, clip_idx, action_id, rank, score)
       SELECT c.video_id, c.idx,
              :first_action + ((abs(hashtext(c.video_id::text)) + (c.idx / 4) * 37 + r * 53)
                               % :n_actions),
              r + 1,
              CASE WHEN r = 0 THEN 0.35 + 0.65 * random()
                   ELSE (0.3 * random()) / r END
       FROM clips c, generate_series(0, 4) AS r""",
]


def seed(url: str, videos: int, clips: int, labels: list[str]) -> None:
    engine = create_engine(normalize_database_url(url))
    with Session(engine) as session:
        model_id = ensure_model(session, "kinetics400-bench", "1", labels)
        first = session.scalar(
            text("SELECT min(id) FROM actions WHERE model_id = :m"), {"m": model_id}
        )
        session.execute(text("SELECT setseed(0.42)"))
        params = {
            "model_id": model_id,
            "videos": videos,
            "clips": clips,
            "first_action": first,
            "n_actions": len(labels),
        }
        for sql in SEED_SQL:
            started = time.monotonic()
            session.execute(text(sql), params)
            print(f"  {sql.split()[2]}: {time.monotonic() - started:.1f} s", flush=True)
        started = time.monotonic()
        segments = rebuild_segments(session)
        print(f"  {segments:,} segments: {time.monotonic() - started:.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        n = conn.execute(text("SELECT count(*) FROM clip_scores")).scalar()
    engine.dispose()
    print(f"seeded {n:,} clip scores", flush=True)


def queries(
    labels: list[str], video_ids: list[str], rng: random.Random
) -> tuple[str, dict[str, object]]:
    """One query of the mix: (kind, parameters)."""
    pick = rng.random()
    name = rng.choice(labels)
    if pick < 0.55:
        return "exact", {"action": name, "limit": 20}
    if pick < 0.65:
        cut = rng.randrange(len(name))
        return "fuzzy", {"action": name[:cut] + name[cut + 1 :], "limit": 20}  # a typo
    if pick < 0.75:
        return "sort=time", {"action": name, "sort": "time", "limit": 20}
    if pick < 0.85:
        return "one video", {"action": name, "video": rng.choice(video_ids), "min_score": 0.1}
    if pick < 0.93:
        return "two, any", {"action": [name, rng.choice(labels)], "limit": 20}
    return "two, all", {"action": [name, rng.choice(labels)], "match": "all", "min_score": 0.1}


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive GET; the API answers with a Content-Length."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(head[9:12]), await reader.readexactly(length)


async def load(
    port: int, labels: list[str], video_ids: list[str], clients: int, seconds: float
) -> tuple[list[tuple[str, float]], int]:
    """``clients`` closed-loop clients for ``seconds``: (kind, latency s) and non-200 count.

    A raw asyncio HTTP/1.1 client (one keep-alive connection each, on uvloop), so that the load
    generator, sharing the CPUs with the server, costs a fraction of what httpx would.
    """
    latencies: list[tuple[str, float]] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def client(n: int) -> None:
        nonlocal errors
        rng = random.Random(n)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop:
                kind, params = queries(labels, video_ids, rng)
                target = "/search?" + urlencode(params, doseq=True)
                started = time.perf_counter()
                status, _ = await _get(reader, writer, target)
                latencies.append((kind, time.perf_counter() - started))
                errors += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors


def _run_load(*args: Any) -> tuple[list[tuple[str, float]], int]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(load(*args))


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    labels = [x.strip() for x in LABELS_FILE.read_text().splitlines() if x.strip()]
    migrate.upgrade(url)
    engine = create_engine(normalize_database_url(url))
    with engine.connect() as conn:
        seeded = conn.execute(text("SELECT count(*) FROM clip_scores")).scalar()
    engine.dispose()
    if seeded:  # --database-url of an earlier run: reuse its data
        print(f"reusing {seeded:,} clip scores", flush=True)
    else:
        print(f"seeding {args.videos:,} videos x {args.clips} clips x top-5 ...", flush=True)
        seed(url, args.videos, args.clips, labels)
    video_ids = [
        str(uuid.UUID(bytes=bytes.fromhex(__import__("hashlib").md5(f"v{i}".encode()).hexdigest())))
        for i in range(1, args.videos + 1)
    ]
    env = {**os.environ, "VCAT_DATABASE_URL": url, "VCAT_AUDIT_ENABLED": str(args.audit)}
    results = {}
    for name in args.servers:
        port = free_port()
        server = start_api(env, port, workers=args.workers, server=name)
        try:
            _run_load(port, labels, video_ids, args.clients, 3)  # warm-up
            latencies, errors = _run_load(port, labels, video_ids, args.clients, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
        results[name] = report(name, latencies, errors, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _summary(ms: list[float], seconds: float) -> dict[str, float]:
    ms = sorted(ms)
    at = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"requests": len(ms), "req_s": len(ms) / seconds, "p50_ms": at(0.5),
            "p99_ms": at(0.99), "mean_ms": statistics.fmean(ms)}  # fmt: skip


def report(
    server: str, latencies: list[tuple[str, float]], errors: int, args: argparse.Namespace
) -> dict[str, Any]:
    kinds: dict[str, list[float]] = {}
    for kind, seconds in latencies:
        kinds.setdefault(kind, []).append(seconds * 1000)
    rows = {"all": _summary([ms for v in kinds.values() for ms in v], args.seconds)}
    rows |= {k: _summary(v, args.seconds) for k, v in sorted(kinds.items())}
    print(f"\n/search on {SERVERS[server]}, {args.workers} process(es), {args.clients} clients "
          f"for {args.seconds:g} s, {os.cpu_count()} CPUs, errors {errors}")  # fmt: skip
    print(f"{'queries':<12}{'requests':>10}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for kind, r in rows.items():
        print(f"{kind:<12}{r['requests']:>10,}{r['req_s']:>8.0f}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['mean_ms']:>9.1f}")  # fmt: skip
    return {"server": server, "clients": args.clients, "seconds": args.seconds,
            "workers": args.workers, "cpus": os.cpu_count(), "errors": errors,
            "latency": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--clips", type=int, default=20, help="clips per video")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)),
                        help="API processes")  # fmt: skip
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=["vcat"],
                        help="run the load against each in turn (same data)")  # fmt: skip
    parser.add_argument(
        "--audit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record searches in the audit log (the default server setting)",
    )
    parser.add_argument("--database-url", help="use this database as is (seeded if empty)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.database_url:
        run(args.database_url, args)
        return
    external = os.environ.get("VCAT_DATABASE_URL")
    if external:
        admin = normalize_database_url(external)
        name = f"vcat_bench_{uuid.uuid4().hex[:8]}"
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run(make_url(admin).set(database=name).render_as_string(hide_password=False), args)
        finally:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()
        return
    from vcat.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="vcat-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        try:
            run(server.start(), args)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
