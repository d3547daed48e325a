"""``vcat index``: index local video files with a stored model, no database or broker needed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from vcat.cli.common import console, err_console, fail, print_table, warn
from vcat.settings import get_settings
from vcat.tasks import CLIP_SECONDS_MAX, CLIP_SECONDS_MIN


class _VideoSeconds(ProgressColumn):
    """``done/total s video``; the total is unknown while no file declares a duration."""

    def render(self, task: Task) -> Text:
        total = f"{task.total:.1f}" if task.total else "?"
        return Text(f"{task.completed:.1f}/{total} s video")


def index(
    # str, not Path: each file's problem (unreadable, a URL) is reported by the pipeline's own
    # checks and the others are still indexed; a Path argument would stop the whole run.
    videos: list[str] = typer.Argument(..., help="Local video files"),
    model: str | None = typer.Option(None, "--model", "-m", help="Model name (default: setting)"),
    window: float | None = typer.Option(None, help="Clip length in seconds (default: model's)"),
    stride: float | None = typer.Option(None, help="Seconds between clip starts (model's)"),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Labels kept per clip"),
    threshold: float = typer.Option(0.5, help="Segment threshold on a label's probability"),
    json_file: Path | None = typer.Option(
        None, "--json", help="Write results as JSON ('-': stdout)"
    ),
) -> None:
    """Index videos: per-clip top-k actions and segments per action."""
    for flag, value in (("--window", window), ("--stride", stride)):
        if value is not None and not CLIP_SECONDS_MIN <= value <= CLIP_SECONDS_MAX:  # NaN too
            fail(f"{flag} must be between {CLIP_SECONDS_MIN:g} and {CLIP_SECONDS_MAX:g} seconds")
    if top_k < 1:
        fail("--top-k must be >= 1")
    if not 0.0 <= threshold <= 1.0:
        fail("--threshold must be between 0 and 1")
    if json_file is not None and str(json_file) != "-":
        folder = json_file.parent
        if json_file.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
            fail(f"cannot write {json_file}: not a writable file path")  # before any indexing

    from worker.models import load_named
    from worker.tsm.fast import default_batch_size, make_predictor  # torch: only when used
    from worker.tsm.store import StoreError
    from worker.video.errors import VideoError
    from worker.video.pipeline import Progress as ClipProgress
    from worker.video.pipeline import VideoIndex, index_videos
    from worker.video.probe import probe_video

    settings = get_settings()
    name = model or settings.default_model
    try:
        net, meta = load_named(name)
        predictor = make_predictor(net, meta, settings.device, settings.precision, settings.compile)
    except (StoreError, ValueError, OSError) as exc:
        fail(f"cannot load model {name!r}: {exc}")
    batch_size = settings.batch_size or default_batch_size(predictor.device)

    failures: dict[str, VideoError] = {}
    durations: dict[str, float] = {}
    order = list(dict.fromkeys(videos))  # each file once, in the order given
    for path in order:
        try:
            durations[path] = probe_video(path).duration or 0.0
        except VideoError as exc:
            failures[path] = exc
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)

    results: dict[str, VideoIndex] = {}
    done: dict[str, float] = dict.fromkeys(durations, 0.0)
    clips = 0
    started = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        _VideoSeconds(),
        TextColumn("{task.fields[rate]:.1f} clips/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True, disable=not durations) as bar:
        task = bar.add_task("indexing", total=sum(durations.values()) or None, rate=0.0)

        def on_progress(p: ClipProgress) -> None:
            nonlocal clips
            clips += 1
            done[p.path] = max(done[p.path], p.seconds_done)
            durations[p.path] = p.duration  # exact duration replaces the header's claim
            rate = clips / max(1e-9, time.perf_counter() - started)
            bar.update(task, completed=sum(done.values()), total=sum(durations.values()), rate=rate)

        for result in index_videos(
            list(durations),
            predictor,
            meta,
            window=window,
            stride=stride,
            top_k=top_k,
            threshold=threshold,
            batch_size=batch_size,
            on_progress=on_progress,
        ):
            if isinstance(result, VideoError):
                failures[str(result.path)] = result
                bar.console.print(f"[bold red]error:[/] {result}", highlight=False, soft_wrap=True)
            else:
                results[result.path] = result

    to_stdout = json_file is not None and str(json_file) == "-"
    for path in order:
        if path in results:
            _show(results[path], table=not to_stdout)  # stdout carries only JSON then
    if json_file is not None:
        _write_json(json_file, order, results, failures)
    elapsed = time.perf_counter() - started
    seconds = sum(r.duration for r in results.values())
    err_console.print(
        f"{len(results)} indexed, {len(failures)} failed: {seconds:.1f} s of video in "
        f"{elapsed:.1f} s ({clips} clips, model {meta.name}, batch {batch_size})",
        highlight=False,
    )
    if failures:
        raise typer.Exit(1)


def _show(result: Any, table: bool) -> None:
    for w in result.warnings:
        warn(f"{result.path}: {w}")
    if not table:
        return
    title = f"{result.path}: {len(result.clips)} clips, {result.duration:.1f} s"
    if not result.segments:
        console.print(f"{title}: no label reached {result.threshold:g}", highlight=False)
        return
    rows = [
        [s.label, f"{s.start:.2f}", f"{s.end:.2f}", f"{s.max:.3f}", f"{s.mean:.3f}"]
        for s in result.segments
    ]
    print_table(title, ["label", "start s", "end s", "max", "mean"], rows)


def _write_json(target: Path, order: list[str], results: dict, failures: dict) -> None:
    data = {
        "videos": [results[p].to_dict() for p in order if p in results],
        "errors": [
            {"path": p, "reason": failures[p].reason, "message": str(failures[p])}
            for p in order
            if p in failures
        ],
    }
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if str(target) == "-":
        typer.echo(text, nl=False)
        return
    try:
        target.write_text(text)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
