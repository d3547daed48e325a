"""The indexing job: claim the video, run it through the process's engine, store, finish.

Jobs run on Celery's thread pool, so every job in the process shares the warm model and batcher
of ``worker.engine``; the first job of a model loads it (CUDA is first touched here, in the worker
process, never in a parent that forks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service.db import get_sessionmaker
from service.index_writer import IndexDataError
from vcat import tasks
from vcat.settings import get_settings
from worker import jobs
from worker.celery_app import app
from worker.video.errors import VideoError
from worker.video.pipeline import IndexEngine, JobCancelled

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0
PRODUCERS = 2  # decode threads per engine

# Set when the worker begins to shut down (SIGTERM from a deploy or a restart, Ctrl-C). Running
# jobs then hand their videos back at once: waiting for them held the shutdown until an
# orchestrator's grace period ran out and SIGKILL came, which cost each video an attempt.
_shutdown = threading.Event()
_waiting: set[threading.Event] = set()  # each running job's wake-up
_waiting_lock = threading.Lock()


class _HandBack(Exception):
    """The worker is shutting down: this job gives its video back to the queue."""


def hand_back_jobs() -> None:
    """Wake every running job to hand its video back (``worker_shutting_down``)."""
    _shutdown.set()
    with _waiting_lock:
        for wake in _waiting:
            wake.set()


@dataclass(eq=False)
class _Loaded:
    """A warm engine, the copy of the model it was loaded from, and the jobs using it."""

    engine: IndexEngine
    source: tuple[str, int, int] | None
    users: int = 0
    retired: bool = False  # replaced or removed: closes when its last job ends


_engines: dict[str, _Loaded] = {}
_engines_lock = threading.Lock()


class ModelUnavailable(RuntimeError):
    """The requested model is neither in the store nor bundled."""


@contextmanager
def engine_for(name: str) -> Iterator[IndexEngine]:
    """The process's engine for model ``name``, loaded on first use and kept warm.

    A model imported again under the same name (``vcat models import`` replaces its directory)
    is loaded afresh for the next job; jobs already running finish on the copy they started
    with, and that engine closes after the last of them."""
    loaded = _acquire(name)
    try:
        yield loaded.engine
    finally:
        with _engines_lock:
            loaded.users -= 1
            idle = loaded.retired and loaded.users == 0
        if idle:
            loaded.engine.close()


def _acquire(name: str) -> _Loaded:
    with _engines_lock:
        # Looked at under the lock: a job that looked before a re-import must not replace the
        # copy that a job after it has just loaded.
        source = _source(name)
        loaded = _engines.get(name)
        if loaded is not None and loaded.source != source:
            del _engines[name]  # replaced or removed: no new job gets this copy
            loaded.retired = True
            if loaded.users == 0:
                loaded.engine.close()  # before the new copy loads: one model in memory
            loaded = None
        if loaded is None:
            # Loading holds the lock: the jobs behind it want this model too.
            loaded = _engines[name] = _Loaded(_load_engine(name), source)
        loaded.users += 1
    return loaded


def _source(name: str) -> tuple[str, int, int] | None:
    """Which copy of model ``name`` a job would load now: its directory and the inode and
    mtime of its metadata file (a re-import renames a new directory into place). None when
    the name resolves to nothing; loading then fails with the reason."""
    from worker.models import resolve_model
    from worker.tsm.store import META_FILE, StoreError

    try:
        path = resolve_model(name)
        stat = (path / META_FILE).stat()
    except (StoreError, OSError):
        return None
    return str(path), stat.st_ino, stat.st_mtime_ns


def engines() -> list[IndexEngine]:
    """The current engine of each model loaded (not those finishing their last jobs)."""
    with _engines_lock:
        return [loaded.engine for loaded in _engines.values()]


def _load_engine(name: str) -> IndexEngine:
    from worker.models import resolve_model
    from worker.tsm.store import StoreError, load_model

    try:
        model, meta = load_model(resolve_model(name))
    except StoreError as exc:
        raise ModelUnavailable(str(exc)) from None
    except Exception as exc:  # a corrupt or incompatible model file fails its jobs, clearly
        raise ModelUnavailable(f"model {name!r} could not be loaded: {exc}") from None
    try:
        return _start_engine(name, model, meta)
    except Exception as exc:  # bad VCAT_DEVICE, out of memory at warm-up: the job fails, counted
        raise ModelUnavailable(f"model {name!r} could not be started: {exc}") from None


def _start_engine(name: str, model: Any, meta: Any) -> IndexEngine:
    import torch

    from worker.tsm.fast import cpu_threads, default_batch_size, make_predictor, resolve_device

    settings = get_settings()
    device = resolve_device(settings.device)
    decode_nice = 0
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(settings.cpu_threads, decoders=PRODUCERS))
        # The model's thread is the critical path on a CPU: decoders that share its cores at
        # equal priority took a quarter of its time (150 short videos on 2 cores: 12 ms a clip
        # against 9 ms of its own CPU). Behind the clip queue, yielding costs them nothing on a
        # host that runs only vcat; where other programs keep every core busy it slows them
        # (docs/ON_PREM.md: VCAT_DECODE_NICE=0 there).
        decode_nice = settings.decode_nice
    predictor = make_predictor(
        model, meta, device=str(device), precision=settings.precision, compile=settings.compile
    )
    batch = settings.batch_size or default_batch_size(device)
    predictor.warm_up(batch)
    log.info("loaded model %s on %s (batch %d)", name, device, batch)
    return IndexEngine(
        predictor, meta, batch_size=batch, producers=PRODUCERS, decode_nice=decode_nice
    )


def _session() -> Session:
    return get_sessionmaker()()


def _time_limit(duration: float | None) -> float:
    s = get_settings()
    return s.job_time_base_seconds + s.job_time_per_video_second * (duration or 0.0)


@app.task(name=tasks.INDEX_VIDEO, bind=True, acks_late=True, reject_on_worker_lost=True)
def index_video(
    self: Any,
    video_id: str,
    model: str | None = None,
    window: float | None = None,
    stride: float | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    with ExitStack() as using:  # the engines this job uses, released when it ends
        return _index(self, using, video_id, model, window, stride, top_k)


def _index(
    task: Any,
    using: ExitStack,
    video_id: str,
    model: str | None,
    window: float | None,
    stride: float | None,
    top_k: int,
) -> dict[str, Any]:
    settings = get_settings()
    # Load (or find warm) the model before claiming: a slow first load must not look like a
    # silent, lost job to the reconciler.
    asked = model or settings.default_model
    engine: IndexEngine | ModelUnavailable
    try:
        engine = using.enter_context(engine_for(asked))
    except ModelUnavailable as exc:
        engine = exc
    with _session() as session:
        claim = jobs.claim(session, video_id, settings.max_attempts, settings.job_stale_seconds)
    if claim is None:
        return {"video": video_id, "outcome": "skipped"}
    if isinstance(claim, jobs.GaveUp):
        log.warning("video %s failed for good: %s", video_id, claim.error)
        return {"video": video_id, "outcome": "failed", "error": claim.error}
    # The row, not the message, says how to index: a reindex that changed the model or options
    # while an older message was queued (or a retry was pending) must not be lost.
    wanted = claim.model_name or settings.default_model
    opts = claim.options
    window = opts.get("window", window)
    stride = opts.get("stride", stride)
    top_k = int(opts.get("top_k") or top_k)
    try:
        if wanted != asked:
            engine = using.enter_context(engine_for(wanted))
        if isinstance(engine, ModelUnavailable):
            raise engine
        return _run(claim, engine, window, stride, top_k)
    except JobCancelled:
        return {"video": video_id, "outcome": "cancelled"}
    except _HandBack:
        with _session() as session:
            jobs.hand_back(session, claim)
        # A new message now (this one is acknowledged); if the broker is gone, the row stays
        # queued and the reconciler sends it.
        raise task.retry(countdown=0, max_retries=None) from None
    except (VideoError, ModelUnavailable, IndexDataError) as exc:  # wrong input: no retry
        with _session() as session:
            jobs.fail(session, claim, str(exc), retry=False, max_attempts=settings.max_attempts)
        return {"video": video_id, "outcome": "failed", "error": str(exc)}
    except Exception as exc:  # a crash of ours: try again, up to max_attempts
        log.exception("indexing %s failed (attempt %d)", video_id, claim.attempt)
        error = f"{type(exc).__name__}: {exc}"
        with _session() as session:
            again = jobs.fail(session, claim, error, retry=True, max_attempts=settings.max_attempts)
        if again:
            raise task.retry(countdown=min(60, 5 * claim.attempt), max_retries=None) from exc
        return {"video": video_id, "outcome": "failed", "error": error}


def _run(
    claim: jobs.Claim, engine: IndexEngine, window: float | None, stride: float | None, top_k: int
) -> dict[str, Any]:
    settings = get_settings()
    path = claim.media_path()
    if path is None or not Path(path).is_file():
        raise VideoError(str(path or claim.video_id), "not_found")
    withdrawn = threading.Event()
    request = engine.submit(
        path, window=window, stride=stride, top_k=top_k,
        threshold=settings.default_min_score, thumbnails=True, cancelled=withdrawn.is_set,
    )  # fmt: skip
    began = time.monotonic()
    decoding_since: float | None = None  # the limit counts from when a decoder took the video
    wake = threading.Event()  # the result is in, or the worker is shutting down
    request.future.add_done_callback(lambda _: wake.set())
    with _session() as session:
        try:
            with _waiting_lock:
                _waiting.add(wake)
            while True:
                if not _shutdown.is_set():
                    wake.wait(HEARTBEAT_SECONDS)
                if request.future.done():
                    result = request.future.result()
                    break
                if _shutdown.is_set():
                    raise _HandBack()
                duration = request.duration or claim.duration or 0.0
                progress = request.seconds_done / duration if duration else 0.0
                if not jobs.heartbeat(session, claim, progress):
                    withdrawn.set()  # deleted, or claimed by another worker: stop decoding
                    with suppress(Exception):
                        request.future.result(timeout=30)
                    raise JobCancelled(f"video {claim.video_id} was withdrawn")
                if request.duration is not None and decoding_since is None:
                    decoding_since = time.monotonic()
                # the scanned length, not the header's (which some files do not declare)
                limit = _time_limit(request.duration or claim.duration)
                if decoding_since is not None and time.monotonic() - decoding_since > limit:
                    raise TimeoutError(f"indexing took longer than its {limit:.0f}s limit")
        finally:
            with _waiting_lock:
                _waiting.discard(wake)
            if not request.future.done():
                # whatever ended the wait (timeout, database error, shutdown): stop decoding
                withdrawn.set()
        clips = [(c.start, c.end, c.top, c.thumbnail) for c in result.clips]
        if not jobs.store(session, claim, engine.meta, clips):
            raise JobCancelled(f"video {claim.video_id} was withdrawn before its index was stored")
        if settings.delete_source_after_index:
            # The index is stored: a failure here must not fail (and retry) the job.
            try:
                jobs.drop_source(session, claim)
            except Exception:
                log.exception("video %s is indexed, but removing its source failed", claim.video_id)
    return {
        "video": str(claim.video_id),
        "outcome": "done",
        "clips": len(clips),
        "seconds": round(time.monotonic() - began, 3),
        "warnings": result.warnings,
    }
