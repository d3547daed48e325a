"""``vcat synth``: the synthetic temporal-action benchmark (clips per class, or one timeline)."""

from __future__ import annotations

from pathlib import Path

import typer

from vcat.cli.common import console, fail, print_table


def synth(
    out_dir: Path | None = typer.Argument(None, help="Folder to write class folders into"),
    per_class: int = typer.Option(20, "--per-class", help="Clips per class"),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same videos)"),
    timeline: Path | None = typer.Option(
        None, "--timeline", help="Write one long video of consecutive actions here instead"
    ),
    seconds: float = typer.Option(60.0, "--seconds", help="Timeline length"),
) -> None:
    """Generate synthetic action clips as H.264 MP4s (only temporal order tells classes apart)."""
    from rich.progress import Progress

    from worker.synth import (
        ACTIONS,
        SynthError,
        check_per_class,
        check_seed,
        check_timeline_seconds,
        generate_dataset,
        generate_timeline,
    )

    try:
        # Every argument is checked before a progress bar is drawn or a file is created.
        check_seed(seed)
        if timeline is not None:
            if out_dir is not None:
                fail("give either DIR or --timeline FILE.mp4, not both")
            if timeline.suffix.lower() != ".mp4":
                fail(f"--timeline must name an .mp4 file, got {timeline}")
            check_timeline_seconds(seconds)
            with console.status("rendering timeline"):
                truth = generate_timeline(timeline, seed, seconds=seconds)
            rows = [[t["action"], t["start"], t["end"]] for t in truth]
            print_table(f"{timeline} ({len(truth)} actions)", ["action", "start", "end"], rows)
            console.print(f"ground truth: {timeline.with_suffix('.json')}")
            return
        if out_dir is None:
            fail("give DIR (a folder for class folders) or --timeline FILE.mp4")
        check_per_class(per_class)
        with Progress(console=console) as progress:
            task = progress.add_task("rendering clips", total=per_class * len(ACTIONS))
            written = generate_dataset(
                out_dir, per_class, seed, on_clip=lambda _: progress.advance(task)
            )
    except SynthError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write: {exc}")
    console.print(f"wrote {len(written)} clips in {len(ACTIONS)} classes under {out_dir}")
