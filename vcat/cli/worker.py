"""``vcat worker``: a Celery worker process for indexing jobs (or one per GPU with ``--gpus``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import typer

from vcat.cli.common import console, fail
from vcat.cli.dbsession import checked_engine
from vcat.settings import get_settings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # Celery's --loglevel choices


def _gpu_ids(spec: str) -> list[str]:
    """'all' counts the GPUs without touching CUDA in this (parent) process; else a list."""
    if spec != "all":
        return [g.strip() for g in spec.split(",") if g.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        fail("--gpus all: nvidia-smi not found; name the GPUs, e.g. --gpus 0,1")
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def worker(
    queues: str = typer.Option(
        "auto", help="Comma-separated queues; auto: gpu when CUDA is available, else cpu"
    ),
    concurrency: int = typer.Option(
        None, min=1, help="Jobs at once in this process (default VCAT_WORKER_CONCURRENCY)"
    ),
    gpus: str = typer.Option(
        "", help="Run one worker process per GPU ('all' or '0,1'), pinned by CUDA_VISIBLE_DEVICES"
    ),
    loglevel: str = typer.Option("INFO", help="Celery log level: " + ", ".join(LOG_LEVELS)),
    serve: bool = typer.Option(
        False, "--serve", hidden=True, help="Run the Celery worker in this process (no supervisor)"
    ),
) -> None:
    """Run an indexing worker until Ctrl-C / SIGTERM.

    The Celery worker runs in a child process that is restarted if it dies (a crash, the OOM
    killer, an unrecoverable broker error), so CUDA is only ever touched in that child."""
    settings = get_settings()
    if not settings.database_url or not settings.broker_url:
        fail("a worker needs VCAT_DATABASE_URL and VCAT_BROKER_URL (vcat up sets both)")
    # Checked here, in the parent: a child that fails on its arguments would only be restarted.
    checked_engine(settings.database_url).dispose()
    if loglevel.upper() not in LOG_LEVELS:
        fail(f"--loglevel must be one of {', '.join(LOG_LEVELS)} (any case), not {loglevel!r}")
    loglevel = loglevel.upper()
    if concurrency is None:
        concurrency = settings.worker_concurrency
    if serve:
        _run(queues, concurrency, loglevel)
        return
    if gpus:
        ids = _gpu_ids(gpus)
        if not ids:
            fail("no GPU found")
        children = [(f"worker-gpu{g}", "gpu", {"CUDA_VISIBLE_DEVICES": g}) for g in ids]
    else:
        children = [("worker", queues, {})]
    raise typer.Exit(_supervise(children, concurrency, loglevel))


def _supervise(
    children: list[tuple[str, str, dict[str, str]]], concurrency: int, loglevel: str
) -> int:
    from vcat.supervisor import Stack

    settings = get_settings()
    stack = Stack(settings, log=lambda m: console.print(f"[dim]vcat:[/] {m}", highlight=False))
    stack.database_url = settings.database_url or ""
    stack.broker_url = settings.broker_url or ""
    for name, queues, env in children:
        argv = [
            sys.executable, "-m", "vcat.cli", "worker", "--serve", "--queues", queues,
            "--concurrency", str(concurrency), "--loglevel", loglevel,
        ]  # fmt: skip
        # 2: click's usage error (bad arguments); restarting would only repeat it.
        stack.spawn(name, argv, env=env, restart=True, fatal=(2,))
    try:
        return stack.wait()
    finally:
        stack.stop()


def _run(queues: str, concurrency: int, loglevel: str) -> None:
    from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

    from vcat import tasks
    from worker.celery_app import app
    from worker.reconcile import Housekeeper
    from worker.tasks import hand_back_jobs

    names = [q.strip() for q in queues.split(",") if q.strip()]
    if names == ["auto"]:
        import torch

        names = [tasks.GPU_QUEUE if torch.cuda.is_available() else tasks.CPU_QUEUE]
    housekeeper = Housekeeper(names)

    def _ready(**_: object) -> None:
        housekeeper.start()
        threading.Thread(target=_warm_up, name="vcat-warmup", daemon=True).start()

    def _shutdown(**_: object) -> None:
        housekeeper.stop()

    def _shutting_down(**_: object) -> None:
        # Running jobs give their videos back now (uncounted) instead of holding the shutdown.
        hand_back_jobs()

    worker_ready.connect(_ready, weak=False)
    worker_shutting_down.connect(_shutting_down, weak=False)
    worker_shutdown.connect(_shutdown, weak=False)
    node = f"vcat-{'-'.join(names)}-{os.getpid()}@%h"
    app.worker_main([
        "worker", "--pool", "threads", "--concurrency", str(concurrency),
        "--queues", ",".join(names), "--prefetch-multiplier", "1", "--hostname", node,
        "--without-gossip", "--without-mingle", "--loglevel", loglevel,
    ])  # fmt: skip


def _warm_up() -> None:
    """Load the default model before the first job asks for it."""
    import logging

    from worker.tasks import engine_for

    try:
        with engine_for(get_settings().default_model):
            pass
    except Exception as exc:  # a missing model fails its jobs with a clear error; keep running
        logging.getLogger("vcat.worker").error("could not load the default model: %s", exc)
