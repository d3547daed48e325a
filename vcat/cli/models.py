"""``vcat models``: import, list, show, remove, pull and export TSM models in the model store.

torch is imported inside the commands: the API image has no torch.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from vcat.cli.common import console, fail, print_json, print_table

app = typer.Typer(help="Manage action-recognition models in the model store.", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Machine-readable JSON output.")


def _summary(meta: Any) -> dict[str, Any]:
    return {
        "name": meta.name, "arch": meta.arch, "segments": meta.num_segments,
        "classes": meta.num_classes, "shift": meta.shift, "online": meta.online,
        "source": meta.provenance.get("source", ""),
    }  # fmt: skip


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="Checkpoint: TSM authors' .pth, mmaction2 .pth."),
    labels: str = typer.Option(
        ..., "--labels", help="kinetics400 | somethingv2 | jester (mmaction2's order) | PATH"
    ),
    segments: int | None = typer.Option(None, "--segments", min=1, help="Frames per clip (T)."),
    name: str | None = typer.Option(None, "--name", help="Store name (default: file name)."),
    as_json: bool = JSON,
) -> None:
    """Convert an external checkpoint into vcat's format in the model store."""
    from worker.tsm.checkpoints import CheckpointError
    from worker.tsm.store import LABEL_URLS, StoreError, import_checkpoint, resolve_labels

    named = labels if labels in LABEL_URLS else None
    try:
        meta = import_checkpoint(file, resolve_labels(labels), segments, name, label_map=named)
    except (CheckpointError, StoreError) as exc:
        fail(str(exc))
    if as_json:
        print_json(_summary(meta))
    else:
        console.print(f"imported [bold]{meta.name}[/] ({meta.arch}, {meta.num_classes} classes)")


@app.command("list")
def list_(as_json: bool = JSON) -> None:
    """List the models: the stored ones and those bundled with vcat."""
    from worker.models import all_models
    from worker.tsm.store import StoreError

    try:
        rows = [{**_summary(m), "where": where} for m, where in all_models()]
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print_json(rows)
    else:
        cols = ["name", "arch", "segments", "classes", "shift", "online", "where", "source"]
        print_table("models", cols, [[r[c] for c in cols] for r in rows])


@app.command()
def show(name: str, as_json: bool = JSON) -> None:
    """Show a model's metadata."""
    from worker.models import model_meta
    from worker.tsm.store import StoreError

    try:
        meta = model_meta(name)
    except StoreError as exc:
        fail(str(exc))
    data = asdict(meta)
    if as_json:
        print_json(data)
        return
    labels = data.pop("labels")
    preview = ", ".join(labels[:5]) + (f", ... ({len(labels)})" if len(labels) > 5 else "")
    rows = [[k, v] for k, v in sorted(data.items())] + [["labels", preview]]
    print_table(name, ["field", "value"], rows)


@app.command()
def remove(name: str) -> None:
    """Delete a stored model."""
    from worker.models import bundled_models
    from worker.tsm.store import StoreError, default_root
    from worker.tsm.store import remove as remove_model

    try:
        if name in bundled_models() and not (default_root() / name).is_dir():
            fail(f"{name!r} is bundled with vcat and cannot be removed")
        remove_model(name)
    except StoreError as exc:
        fail(str(exc))
    console.print(f"removed {name}")


@app.command()
def pull(
    name: str = typer.Argument(..., help="A released model; run with an unknown name to list."),
    labels: str | None = typer.Option(None, "--labels", help="Override: name or PATH."),
    base_url: str | None = typer.Option(None, "--base-url", help="Mirror of the authors' host."),
    labels_base_url: str | None = typer.Option(None, "--labels-base-url", help="Label mirror."),
    as_json: bool = JSON,
) -> None:
    """Download a released checkpoint, verify it and import it."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from worker.tsm.store import StoreError
    from worker.tsm.store import pull as pull_model

    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), console=console, transient=True, disable=as_json,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"pull {name}", total=None)

        def report(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        try:
            meta = pull_model(name, labels, base_url=base_url,
                              labels_base_url=labels_base_url, progress=report)  # fmt: skip
        except StoreError as exc:
            fail(str(exc))
    if as_json:
        print_json(_summary(meta))
    else:
        console.print(f"pulled [bold]{meta.name}[/] ({meta.arch}, {meta.num_classes} classes)")


@app.command()
def export(
    name: str,
    onnx: bool = typer.Option(False, "--onnx", help="Export to ONNX (the only format)."),
    out: Path | None = typer.Option(None, "--out", help="Output file (default NAME.onnx)."),
) -> None:
    """Export a model (input: normalized clips (N, T, 3, S, S); output: logits)."""
    if not onnx:
        fail("choose an export format: --onnx")
    from worker.models import load_named
    from worker.tsm.checkpoints import CheckpointError
    from worker.tsm.store import StoreError

    try:
        model, meta = load_named(name)
    except (CheckpointError, StoreError) as exc:
        fail(str(exc))
    try:
        from worker.tsm.export import export_onnx

        path = export_onnx(model, meta, out or Path(f"{name}.onnx"))
    except (ImportError, OSError) as exc:
        fail(f"ONNX export failed: {exc}")
    console.print(f"wrote {path}")
