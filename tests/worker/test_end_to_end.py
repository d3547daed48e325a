"""End to end with real processes: the API and worker commands exactly as docker-compose.yml
writes them (hostnames mapped to this machine), a real Postgres and Redis that the tests own (so
they can stop and restart them), and a small random-weight model.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from sqlalchemy import create_engine, text

from tests import videos
from tests.support import free_port
from vcat import migrate
from vcat.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.tsm.meta import ModelMeta
from worker.tsm.recognizer import build_model
from worker.tsm.store import save_model

REPO = Path(__file__).resolve().parents[2]
LABELS = ["washing hands", "walking", "turning something clockwise"]
BIN = Path(sys.executable).parent


def compose_command(service: str) -> list[str]:
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    command = spec["services"][service]["command"]
    assert isinstance(command, list), f"{service}: command must be an exec-form list"
    # ${VAR:-default}, interpolated from the environment as docker compose does
    return [
        re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m[1]) or m[2] or "", str(c))
        for c in command
    ]


class Stack:
    """Postgres + Redis owned by the test, the API, and worker processes started on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = EmbeddedPostgres(root / "postgres")
        self.redis = EmbeddedRedis(root / "redis")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VCAT_")}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            VCAT_DATABASE_URL=self.postgres.url,
            VCAT_BROKER_URL=self.redis.url,
            VCAT_DATA_DIR=str(self.root / "data"),
            VCAT_DEFAULT_MODEL="tiny",
            VCAT_JOB_STALE_SECONDS="4",
            VCAT_RECONCILE_SECONDS="1",
            VCAT_REQUEUE_QUEUED_AFTER_SECONDS="30",
            VCAT_MAX_ATTEMPTS="2",
            VCAT_WORKER_CONCURRENCY="4",
            OMP_NUM_THREADS="1",
        )
        env.update(extra)
        return env

    def start(self) -> None:
        self.postgres.start()
        self.redis.start()
        migrate.upgrade(self.postgres.url)
        self.start_api()

    def start_api(self) -> None:
        argv = compose_command("api")
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--port") + 1] = str(self.port)
        log = (self.logs / "api.log").open("ab")
        self.api = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        self.wait_until(lambda: self._status("/readyz") == 200, 60, "API ready")

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker{len(self.workers)}.log").open("ab")
        proc = subprocess.Popen(
            compose_command("worker-cpu"), env=self.env(**env), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.workers.append(proc)
        return proc

    def _status(self, path: str) -> int | None:
        try:
            return httpx.get(self.url + path, timeout=3).status_code
        except httpx.HTTPError:
            return None

    @staticmethod
    def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def upload(self, path: Path, **fields: str) -> dict[str, Any]:
        with path.open("rb") as fh:
            r = httpx.post(f"{self.url}/videos", files={"file": (path.name, fh)}, data=fields,
                           timeout=30)  # fmt: skip
        assert r.status_code == 202, r.text
        return dict(r.json())

    def video(self, video_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/videos/{video_id}", timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_status(self, video_id: str, statuses: set[str], timeout: float = 90) -> dict[str, Any]:
        found = self.wait_until(
            lambda: (v := self.video(video_id))["status"] in statuses and v, timeout,
            f"video {video_id} to reach {statuses}",
        )  # fmt: skip
        return dict(found)

    def sql(self, query: str, **params: Any) -> list[Any]:
        engine = create_engine(self.postgres.url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(query), params).all())
        finally:
            engine.dispose()

    def stop(self) -> None:
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.stop()
        self.postgres.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    meta = ModelMeta(
        name="tiny", arch="resnet18", num_segments=4, labels=LABELS, input_size=112,
        resize_short=128, window_seconds=1.0, stride_seconds=1.0,
    )  # fmt: skip
    save_model(build_model(meta).eval(), meta, root / "data" / "models")
    s = Stack(root)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def worker(stack: Stack) -> Iterator[subprocess.Popen[bytes]]:
    proc = stack.start_worker()
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def _mid_job(stack: Stack, video_id: str, attempt: int = 1) -> None:
    """Wait until the job is well under way but far from done (a long video, several heartbeats)."""
    v = stack.wait_until(
        lambda: (v := stack.video(video_id))["status"] == "processing"
        and v["attempts"] == attempt and v["progress"] > 0.02 and v, 90, "the job to be running",
    )  # fmt: skip
    assert v["progress"] < 0.8, "the job ran too fast to interrupt; lengthen the test video"


def _celery_pid(supervisor: subprocess.Popen[bytes]) -> int:
    """The Celery process under a `vcat worker`."""
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    children = [int(p) for p, pp in (line.split() for line in out.splitlines()[1:])
                if int(pp) == supervisor.pid]  # fmt: skip
    assert len(children) == 1, children
    return children[0]


def _kill_celery(supervisor: subprocess.Popen[bytes]) -> None:
    """SIGKILL the Celery process under a `vcat worker` (its supervisor starts a new one)."""
    os.kill(_celery_pid(supervisor), signal.SIGKILL)


def _clip_rows(stack: Stack, video_id: str) -> list[Any]:
    return stack.sql('SELECT idx, start, "end" FROM clips WHERE video_id = :v ORDER BY idx',
                     v=uuid.UUID(video_id))  # fmt: skip


def test_upload_index_search(stack: Stack, worker: Any, tmp_path: Path) -> None:
    path = videos.make_video(tmp_path / "walk.mp4", duration=5.0, width=96, height=64)
    video = stack.upload(path)
    done = stack.wait_status(video["id"], {"done", "failed"})
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and done["attempts"] == 1
    clips = httpx.get(f"{stack.url}/videos/{video['id']}/clips", timeout=10).json()["items"]
    assert clips[0]["start"] == 0.0
    assert clips[-1]["end"] == pytest.approx(5.0, abs=0.05)  # the timeline covers the video
    top = clips[0]["scores"][0]["action"] if "scores" in clips[0] else clips[0]["top"][0]["action"]
    found = httpx.get(f"{stack.url}/search", params={"action": top, "min_score": 0.0}).json()
    assert any(item["video_id"] == video["id"] for item in found["items"])


@pytest.mark.slow
def test_killed_worker_job_completes_once(stack: Stack, worker: Any, tmp_path: Path) -> None:
    path = videos.make_video(tmp_path / "long.mp4", duration=900.0, width=96, height=64, fps=10)
    video = stack.upload(path)
    _mid_job(stack, video["id"])
    _kill_celery(worker)
    done = stack.wait_status(video["id"], {"done", "failed"}, timeout=120)
    assert done["status"] == "done", done
    assert done["attempts"] == 2
    rows = _clip_rows(stack, video["id"])
    assert [r[0] for r in rows] == list(range(len(rows)))  # no duplicates, no holes
    assert rows[-1][2] == pytest.approx(900.0, abs=0.2)


@pytest.mark.slow
def test_a_stopped_worker_hands_its_job_back_uncounted(
    stack: Stack, worker: Any, tmp_path: Path
) -> None:
    # SIGTERM, as a deploy or `docker compose stop` sends: the Celery process exits at once
    # instead of finishing the job (or being SIGKILLed at the end of a grace period, which
    # counted an attempt), and the one its supervisor starts indexes the video as attempt 1.
    # (a width of its own: identical bytes would be answered with another test's video)
    path = videos.make_video(tmp_path / "deploy.mp4", duration=900.0, width=106, height=64, fps=10)
    video = stack.upload(path)
    _mid_job(stack, video["id"])
    pid = _celery_pid(worker)
    os.kill(pid, signal.SIGTERM)
    stack.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 20, "the worker to exit")
    assert stack.video(video["id"])["status"] != "done"  # given back, not finished
    done = stack.wait_status(video["id"], {"done", "failed"}, timeout=120)
    assert done["status"] == "done" and done["attempts"] == 1, done
    rows = _clip_rows(stack, video["id"])
    assert [r[0] for r in rows] == list(range(len(rows)))


@pytest.mark.slow
def test_crash_every_time_ends_failed_with_reason(
    stack: Stack, worker: Any, tmp_path: Path
) -> None:
    path = videos.make_video(tmp_path / "crashy.mp4", duration=900.0, width=98, height=64, fps=10)
    video = stack.upload(path)
    for attempt in (1, 2):  # VCAT_MAX_ATTEMPTS=2: the worker dies mid-job on every attempt
        _mid_job(stack, video["id"], attempt)
        _kill_celery(worker)
    failed = stack.wait_status(video["id"], {"failed", "done"}, timeout=90)
    assert failed["status"] == "failed"
    assert "gave up after 2 attempts" in failed["error"]
    assert "worker was lost" in failed["error"]
    time.sleep(2)  # the reconciler must not bring it back
    assert stack.video(video["id"])["status"] == "failed"


@pytest.mark.slow
def test_redis_restart_mid_job_loses_nothing(stack: Stack, worker: Any, tmp_path: Path) -> None:
    path = videos.make_video(tmp_path / "r.mp4", duration=900.0, width=100, height=64, fps=10)
    video = stack.upload(path)
    _mid_job(stack, video["id"])
    stack.redis.stop()
    time.sleep(1)
    stack.redis.start()
    done = stack.wait_status(video["id"], {"done", "failed"}, timeout=120)
    assert done["status"] == "done", done
    rows = _clip_rows(stack, video["id"])
    assert [r[0] for r in rows] == list(range(len(rows)))
    # New work still flows through the restarted broker.
    later = stack.upload(videos.make_video(tmp_path / "after.mp4", duration=2.0, width=104,
                                           height=64))  # fmt: skip
    assert stack.wait_status(later["id"], {"done", "failed"})["status"] == "done"


@pytest.mark.slow
def test_postgres_outage_readyz_503_then_recovers(stack: Stack) -> None:
    stack.postgres.stop()
    try:
        r = httpx.get(f"{stack.url}/readyz", timeout=10)
        assert r.status_code == 503
        assert "database unreachable" in r.json()["detail"]
        assert httpx.get(f"{stack.url}/livez", timeout=5).status_code == 200
    finally:
        stack.postgres.start()
    stack.wait_until(lambda: stack._status("/readyz") == 200, 30, "readyz to recover")


@pytest.mark.slow
def test_delete_mid_job_leaves_nothing(stack: Stack, worker: Any, tmp_path: Path) -> None:
    path = videos.make_video(tmp_path / "d.mp4", duration=900.0, width=102, height=64, fps=10)
    video = stack.upload(path)
    _mid_job(stack, video["id"])
    assert httpx.delete(f"{stack.url}/videos/{video['id']}", timeout=10).status_code == 204
    time.sleep(4)  # the worker notices within a heartbeat and stops
    vid = uuid.UUID(video["id"])
    assert stack.sql("SELECT count(*) FROM videos WHERE id = :v", v=vid)[0][0] == 0
    assert stack.sql("SELECT count(*) FROM clips WHERE video_id = :v", v=vid)[0][0] == 0
    media = stack.root / "data" / "media"
    leftovers = [p for p in media.rglob("*") if video["id"] in str(p)]
    assert leftovers == []
    assert httpx.get(f"{stack.url}/videos/{video['id']}", timeout=5).status_code == 404


@pytest.mark.slow
def test_twenty_concurrent_uploads_each_indexed_once(
    stack: Stack, worker: Any, tmp_path: Path
) -> None:
    paths = [
        videos.make_video(tmp_path / f"c{i}.mp4", duration=2.0 + i % 3, width=64 + 2 * i, height=48)
        for i in range(20)
    ]
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(20) as pool:
        posted = list(pool.map(stack.upload, paths))
    ids = [p["id"] for p in posted]
    assert len(set(ids)) == 20
    for vid, path in zip(ids, paths, strict=True):
        done = stack.wait_status(vid, {"done", "failed"}, timeout=180)
        assert done["status"] == "done", done
        assert done["attempts"] == 1
        duration = float(done["duration"])
        rows = _clip_rows(stack, vid)
        assert [r[0] for r in rows] == list(range(len(rows)))
        assert rows[-1][2] == pytest.approx(duration, abs=0.1), path


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


@pytest.mark.slow
def test_timeline_search_finds_ground_truth_with_bundled_model(
    stack: Stack, tmp_path: Path
) -> None:
    """The README's loop: the synthetic timeline through API + queue + worker with the bundled
    demo model; /search returns segments overlapping the true spans."""
    from worker.models import resolve_model
    from worker.synth import generate_timeline

    resolve_model("demo")  # the bundled model must exist
    video_path = tmp_path / "timeline.mp4"
    truth = generate_timeline(video_path, seed=7)
    proc = stack.start_worker(VCAT_DEFAULT_MODEL="demo")
    try:
        video = stack.upload(video_path)
        done = stack.wait_status(video["id"], {"done", "failed"}, timeout=300)
        assert done["status"] == "done", done
        segs = httpx.get(f"{stack.url}/videos/{video['id']}/clips", params={"limit": 1000}).json()
        clips = segs["items"]
        assert clips[0]["start"] == 0.0
        assert clips[-1]["end"] == pytest.approx(float(done["duration"]), abs=0.1)
        found = 0
        for t in truth:
            r = httpx.get(
                f"{stack.url}/search",
                params={"action": t["action"], "video": video["id"], "limit": 100},
                timeout=10,
            ).json()
            span = (float(t["start"]), float(t["end"]))
            best = max((_iou(span, (s["start"], s["end"])) for s in r["items"]), default=0.0)
            found += best >= 0.5
        assert found >= 0.8 * len(truth), f"{found}/{len(truth)} true segments found by /search"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
