"""The training loop: one process, or several under ``torchrun`` (DistributedDataParallel).

Checkpoints after every epoch (model, optimizer, scaler, step, history) so ``resume`` continues
exactly where a run stopped; the learning rate is a pure function of the step (linear warm-up then
cosine), so a resumed run follows the same schedule.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from worker.train.config import TrainConfig, TrainError
from worker.train.data import ClipDataset, DataSet, load_dataset, split
from worker.train.evaluate import predict
from worker.tsm.meta import ModelMeta
from worker.tsm.preprocess import normalize
from worker.tsm.recognizer import Recognizer, build_model, replace_head
from worker.tsm.store import StoreError, load_model, save_model

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    steps: int  # optimizer steps so far (all epochs)
    train_loss: float
    train_top1: float
    val_top1: float | None
    lr: float
    seconds: float


@dataclass
class TrainResult:
    model: Recognizer  # the trained network (eval mode, CPU on rank 0)
    model_dir: Path | None  # None on ranks other than 0
    meta: ModelMeta
    history: list[EpochRecord]
    step_losses: list[float]  # this process's losses, this invocation only
    skipped: list[tuple[Path, str]]
    start_epoch: int  # 1-based epoch this invocation started at (> 1 after --resume)


@dataclass
class Callbacks:
    """Hooks for the CLI's progress display; all optional."""

    on_epoch_start: Callable[[int, int], None] | None = None  # epoch, steps in it
    on_step: Callable[[float], None] | None = None  # loss
    on_epoch_end: Callable[[EpochRecord], None] | None = None
    on_skip: Callable[[Path, str], None] | None = None
    log: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Dist:
    world: int
    rank: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    env = _Dist(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return env


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``settings.device`` ("auto" | "cpu" | "cuda" | "cuda:N") -> a torch device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Autocast dtype: reduced precision (AMP) only on GPU; CPU trains in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _initial_model(config: TrainConfig, labels: list[str]) -> tuple[Recognizer, str, str | None]:
    """The model to train, its arch, and the --init model's name (if any)."""
    if config.init is None:
        arch = config.arch or "resnet18"
        meta = ModelMeta(
            name=config.out,
            arch=arch,
            num_segments=config.segments,
            labels=labels,
            shift=config.shift,
        )
        try:
            return build_model(meta, dropout=config.dropout), arch, None
        except ValueError as exc:
            raise TrainError(str(exc)) from exc
    try:
        source, source_meta = load_model(config.init, root=config.model_root)
    except (StoreError, ValueError) as exc:
        raise TrainError(f"--init {config.init}: {exc}") from exc
    if config.arch is not None and config.arch != source_meta.arch:
        raise TrainError(
            f"--init model {source_meta.name!r} is {source_meta.arch}, but --arch is {config.arch}"
        )
    if source_meta.shift != config.shift:
        kind = "TSM" if source_meta.shift else "TSN (no shift)"
        raise TrainError(
            f"--init model {source_meta.name!r} is {kind}; "
            f"{'drop' if source_meta.shift else 'add'} --no-shift to match it"
        )
    # Rebuild for this run's T (the shift has no weights, so any T loads the same tensors).
    meta = ModelMeta(
        name=config.out,
        arch=source_meta.arch,
        num_segments=config.segments,
        labels=list(source_meta.labels),
        shift=source_meta.shift,
        shift_div=source_meta.shift_div,
        shift_place=source_meta.shift_place,
        online=source_meta.online,
    )
    model = build_model(meta, dropout=config.dropout)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise TrainError(f"--init {config.init}: weights do not fit {meta.arch}: {exc}") from exc
    if list(source_meta.labels) != labels:
        replace_head(model, len(labels))
    return model, source_meta.arch, source_meta.name


def checkpoint_path(config: TrainConfig) -> Path:
    if config.checkpoint_dir is not None:
        return Path(config.checkpoint_dir) / CHECKPOINT_FILE
    from vcat.settings import get_settings

    return get_settings().data_dir / "train" / config.out / CHECKPOINT_FILE


def _load_checkpoint(path: Path, config: TrainConfig, meta: ModelMeta) -> dict[str, Any]:
    if not path.is_file():
        raise TrainError(f"--resume: no checkpoint at {path}")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    saved = state["meta"]
    for key in ("arch", "num_segments", "labels", "shift", "input_size"):
        ours = getattr(meta, key)
        if saved[key] != ours:
            raise TrainError(
                f"--resume: checkpoint has {key}={saved[key]!r}, this run has {ours!r}"
            )
    if state["epoch"] >= config.epochs:
        raise TrainError(
            f"--resume: checkpoint already has {state['epoch']} epochs; pass --epochs > "
            f"{state['epoch']} to train more"
        )
    return state


def train(
    config: TrainConfig,
    settings_device: str = "auto",
    precision: str = "auto",
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train a model on ``config.data`` and save it to the model store as ``config.out``."""
    config.validate()
    cb = callbacks or Callbacks()
    env = _init_distributed()
    try:
        return _train(config, env, settings_device, precision, cb)
    finally:
        if env.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config: TrainConfig, env: _Dist, device_name: str, precision: str, cb: Callbacks
) -> TrainResult:
    started = time.monotonic()
    torch.manual_seed(config.seed)
    device = pick_device(device_name, env.local_rank)
    dtype = pick_dtype(precision, device)
    data: DataSet = load_dataset(config.data, on_skip=cb.on_skip if env.main else None)
    labels = data.labels
    train_idx, val_idx = split(data, config.val_fraction, config.seed)
    short = config.resize_short or config.input_size

    model, arch, init_name = _initial_model(config, labels)
    durations = [item.seconds for item in data.items if item.seconds > 0]
    window = config.window_seconds or round(statistics.median(durations or [2.0]), 2)
    meta = ModelMeta(
        name=config.out,
        arch=arch,
        num_segments=config.segments,
        labels=labels,
        shift=config.shift,
        input_size=config.input_size,
        resize_short=short,
        window_seconds=window,
        stride_seconds=config.stride_seconds or round(window / 2, 2),
    )
    model.to(device)

    train_ds = ClipDataset(
        data,
        train_idx,
        config.segments,
        config.input_size,
        short,
        train=True,
        seed=config.seed,
        cache=config.cache,
    )
    val_ds = ClipDataset(data, val_idx, config.segments, config.input_size, short, train=False)
    sampler: DistributedSampler[Any] | RandomSampler
    generator = torch.Generator()
    if env.world > 1:
        sampler = DistributedSampler(train_ds, env.world, env.rank, shuffle=True, seed=config.seed)
    else:
        sampler = RandomSampler(train_ds, generator=generator)
    loader = DataLoader(
        train_ds,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
    )

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    ckpt = checkpoint_path(config)
    history: list[EpochRecord] = []
    step, start_epoch = 0, 0
    if config.resume:
        state = _load_checkpoint(ckpt, config, meta)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        history = [EpochRecord(**r) for r in state["history"]]

    net: nn.Module = model
    if env.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    steps_per_epoch = len(loader)
    total = steps_per_epoch * config.epochs
    warmup = round(config.warmup_epochs * steps_per_epoch)
    step_losses: list[float] = []
    stop = False
    for epoch in range(start_epoch, config.epochs):
        t0 = time.monotonic()
        train_ds.set_epoch(epoch)
        generator.manual_seed(config.seed * 1000 + epoch)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        if cb.on_epoch_start and env.main:
            cb.on_epoch_start(epoch + 1, steps_per_epoch)
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        lr = config.lr
        for clips, targets in loader:
            lr = lr_at(step, total, warmup, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = normalize(clips, meta, device=device)
            y = targets.to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainError(f"loss became {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 20.0)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            value = float(loss.detach())
            step_losses.append(value)
            loss_sum += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if cb.on_step and env.main:
                cb.on_step(value)
            if config.max_steps is not None and len(step_losses) >= config.max_steps:
                stop = True
                break
        val_top1 = None
        if env.main and len(val_ds):
            logits_val, targets_val = predict(
                model, val_ds, meta, device, dtype, batch_size=config.batch_size
            )
            val_top1 = float((logits_val.argmax(1) == targets_val).float().mean())
        record = EpochRecord(
            epoch + 1,
            step,
            loss_sum / max(seen, 1),
            correct / max(seen, 1),
            val_top1,
            lr,
            round(time.monotonic() - t0, 1),
        )
        history.append(record)
        if env.main:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "step": step,
                    "epoch": epoch + 1,
                    "history": [vars(r) for r in history],
                    "meta": vars(meta),
                    "config": config.to_json(),
                },
                tmp,
            )
            tmp.replace(ckpt)
            if cb.on_epoch_end:
                cb.on_epoch_end(record)
        if env.world > 1:
            dist.barrier()
        if stop:
            break

    model_dir = None
    if env.main:
        last = history[-1] if history else None
        meta.provenance = {
            "trained_by": "vcat train",
            "data": str(config.data),
            "clips": {"train": len(train_idx), "val": len(val_idx), "skipped": len(data.skipped)},
            # The label maps training augmented with (label -> label after a horizontal flip /
            # played backwards); classes not listed were never flipped or reversed.
            "augment": {"flip": data.flip_map, "reverse": data.reverse_map},
            "seed": config.seed,
            "epochs": last.epoch if last else 0,
            "steps": step,
            "val_top1": last.val_top1 if last else None,
            "history": [vars(r) for r in history],
            "init": init_name,
            "config": config.to_json(),
            "world_size": env.world,
            "device": str(device),
            "precision": str(dtype).removeprefix("torch."),
            "torch": torch.__version__,
            "seconds": round(time.monotonic() - started, 1),
        }
        model.eval()
        model_dir = save_model(model.cpu(), meta, root=config.model_root)
    return TrainResult(model, model_dir, meta, history, step_losses, data.skipped, start_epoch + 1)
