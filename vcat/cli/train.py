"""``vcat train`` and ``vcat eval``: fine-tune / train TSM on labelled clips, and measure a model.

torch is imported inside the commands: the API image that imports ``vcat.cli`` has no torch.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vcat.cli.common import console, fail, print_json, print_table, warn


def train(
    data: Path = typer.Argument(..., help="Folder with one folder of videos per class, or a CSV"),
    out: str = typer.Option(..., "--out", help="Name of the trained model in the store"),
    arch: str | None = typer.Option(None, "--arch", help="resnet18|34|50|101|mobilenetv2"),
    segments: int = typer.Option(8, "--segments", "-T", help="Frames per clip (T)"),
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size", help="Clips per step (per process)"),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate"),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw | sgd"),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Held-out share per class"),
    seed: int = typer.Option(0, "--seed"),
    input_size: int = typer.Option(112, "--input-size", help="Crop side fed to the network"),
    resize_short: int | None = typer.Option(None, "--resize-short", help="Default: input size"),
    no_shift: bool = typer.Option(False, "--no-shift", help="Train the TSN baseline (no shift)"),
    init: str | None = typer.Option(None, "--init", help="Start from this stored model"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint"),
    workers: int = typer.Option(0, "--workers", help="Data-loading processes"),
    dropout: float = typer.Option(0.5, "--dropout", help="Dropout before the head"),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: default)"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N steps"),
    window_seconds: float | None = typer.Option(None, "--window-seconds"),
    stride_seconds: float | None = typer.Option(None, "--stride-seconds"),
    checkpoint_dir: Path | None = typer.Option(None, "--checkpoint-dir"),
) -> None:
    """Train a TSM (or, with --no-shift, TSN) model on labelled clips; multi-GPU via torchrun."""
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from vcat.settings import get_settings
    from worker.train.config import TrainConfig, TrainError
    from worker.train.data import DataError
    from worker.train.loop import Callbacks, EpochRecord
    from worker.train.loop import train as run_training
    from worker.tsm.store import StoreError

    if threads > 0:
        torch.set_num_threads(threads)
    if optimizer not in ("adamw", "sgd"):
        fail(f"--optimizer must be adamw or sgd, got {optimizer!r}")
    settings = get_settings()
    config = TrainConfig(
        data=data,
        out=out,
        arch=arch,
        segments=segments,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        val_fraction=val_fraction,
        seed=seed,
        input_size=input_size,
        resize_short=resize_short,
        shift=not no_shift,
        init=init,
        resume=resume,
        workers=workers,
        max_steps=max_steps,
        window_seconds=window_seconds,
        stride_seconds=stride_seconds,
        checkpoint_dir=checkpoint_dir,
        dropout=dropout,
    )
    try:  # before any data is read or a progress bar drawn
        config.validate()
    except TrainError as exc:
        fail(str(exc))
    skipped: list[Path] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=1, loss=float("nan"))

        def start(epoch: int, steps: int) -> None:
            progress.reset(task, total=steps, description=f"epoch {epoch}/{epochs}")

        def step(loss: float) -> None:
            progress.update(task, advance=1, loss=loss)
            if not console.is_terminal:  # no live bar in a log file: a line every 10%
                done, total = progress.tasks[0].completed, progress.tasks[0].total or 1
                if int(done) % max(1, int(total) // 10) == 0:
                    progress.console.print(f"  step {int(done)}/{int(total)} loss {loss:.3f}")

        def end(r: EpochRecord) -> None:
            val = "-" if r.val_top1 is None else f"{100 * r.val_top1:.1f}%"
            progress.console.print(
                f"epoch {r.epoch}: train loss {r.train_loss:.3f}, train top-1 "
                f"{100 * r.train_top1:.1f}%, val top-1 {val}, lr {r.lr:.2e}, {r.seconds:.0f}s"
            )

        def skip(path: Path, reason: str) -> None:
            skipped.append(path)
            warn(f"skipping unreadable video {path}: {reason}")

        callbacks = Callbacks(on_epoch_start=start, on_step=step, on_epoch_end=end, on_skip=skip)
        try:
            result = run_training(config, settings.device, settings.precision, callbacks)
        except (TrainError, DataError, StoreError) as exc:  # StoreError: --init, saving
            fail(str(exc))
    if result.model_dir is None:
        return  # not rank 0
    if skipped:
        warn(f"skipped {len(skipped)} unreadable video(s)")
    last = result.history[-1] if result.history else None
    acc = "-" if last is None or last.val_top1 is None else f"{100 * last.val_top1:.1f}%"
    console.print(f"saved model {result.meta.name!r} to {result.model_dir} (val top-1 {acc})")


def evaluate(
    model: str = typer.Argument(..., help="Stored model name or model directory"),
    data: Path = typer.Argument(..., help="Folder per class, or a CSV of path,label"),
    png: Path | None = typer.Option(None, "--png", help="Write the confusion matrix plot here"),
    batch_size: int = typer.Option(8, "--batch-size"),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: default)"),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON"),
) -> None:
    """Top-1, top-5, per-class accuracy and the confusion matrix of MODEL on labelled clips."""
    import torch

    from vcat.settings import get_settings
    from worker.models import load_named
    from worker.train.config import TrainError
    from worker.train.data import ClipDataset, DataError, load_dataset
    from worker.train.evaluate import confusion_png, metrics, predict
    from worker.train.loop import pick_device, pick_dtype
    from worker.tsm.store import StoreError

    if threads > 0:
        torch.set_num_threads(threads)
    settings = get_settings()
    try:
        net, meta = load_named(model)
        dataset = load_dataset(
            data, min_classes=1, on_skip=lambda p, why: warn(f"skipping unreadable {p}: {why}")
        )
        unknown = sorted(set(dataset.labels) - set(meta.labels))
        if unknown:
            fail(f"classes not known to model {meta.name!r}: {', '.join(unknown)}")
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.precision, device)
        clips = ClipDataset(
            dataset,
            range(len(dataset.items)),
            meta.num_segments,
            meta.input_size,
            meta.resize_short,
            train=False,
            labels=meta.labels,
        )
        with console.status(f"evaluating {len(clips)} clips"):
            logits, targets = predict(
                net.to(device), clips, meta, device, dtype, batch_size=batch_size
            )
    except (StoreError, DataError, TrainError) as exc:
        fail(str(exc))
    m = metrics(logits, targets, list(meta.labels))
    if png is not None:
        confusion_png(m, png)
    if as_json:
        print_json({**m.to_json(), "skipped": [str(p) for p, _ in dataset.skipped]})
        return
    rows = [
        [i, label, m.support[label], "-" if acc is None else f"{100 * acc:.1f}%"]
        for i, (label, acc) in enumerate(m.per_class.items())
    ]
    print_table(f"{meta.name}: per-class accuracy", ["#", "class", "clips", "top-1"], rows)
    k = len(m.labels)
    print_table(
        "confusion (rows: true #, columns: predicted #)",
        ["#", *[str(j) for j in range(k)]],
        [[i, *m.confusion[i]] for i in range(k) if m.support[m.labels[i]]],
    )
    console.print(
        f"{m.count} clips: top-1 {100 * m.top1:.1f}%, top-5 {100 * m.top5:.1f}%"
        + (f", {len(dataset.skipped)} unreadable skipped" if dataset.skipped else "")
    )
    if png is not None:
        console.print(f"confusion matrix plot: {png}")
