"""Accuracy of a model on labelled clips: top-1, top-5, per class, and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from worker.tsm.meta import ModelMeta
from worker.tsm.preprocess import normalize


@dataclass
class Metrics:
    labels: list[str]  # the model's classes (confusion rows/columns)
    count: int
    top1: float
    top5: float
    per_class: dict[str, float | None]  # None: no clips of that class
    support: dict[str, int]
    confusion: list[list[int]]  # [true][predicted]

    def to_json(self) -> dict[str, object]:
        return {
            "labels": self.labels,
            "count": self.count,
            "top1": self.top1,
            "top5": self.top5,
            "per_class": self.per_class,
            "support": self.support,
            "confusion": self.confusion,
        }


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset[tuple[Tensor, int]],
    meta: ModelMeta,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    *,
    batch_size: int = 8,
    workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """Logits ``(N, K)`` (float32, CPU) and targets ``(N,)`` for every clip of ``dataset``."""
    was_training = model.training
    model.eval()
    outs, targets = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    try:
        for clips, y in loader:
            x = normalize(clips, meta, device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                outs.append(model(x).float().cpu())
            targets.append(y)
    finally:
        model.train(was_training)
    return torch.cat(outs), torch.cat(targets)


def metrics(logits: Tensor, targets: Tensor, labels: list[str]) -> Metrics:
    """Accuracy figures from logits ``(N, K)`` and target class indices ``(N,)``."""
    k = len(labels)
    n = len(targets)
    pred = logits.argmax(1)
    top5 = logits.topk(min(5, k), dim=1).indices
    confusion = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(targets.tolist(), pred.tolist(), strict=True):
        confusion[t, p] += 1
    per_class: dict[str, float | None] = {}
    support: dict[str, int] = {}
    for i, label in enumerate(labels):
        total = int(confusion[i].sum())
        support[label] = total
        per_class[label] = int(confusion[i, i]) / total if total else None
    return Metrics(
        labels=list(labels),
        count=n,
        top1=float((pred == targets).float().mean()) if n else 0.0,
        top5=float((top5 == targets[:, None]).any(1).float().mean()) if n else 0.0,
        per_class=per_class,
        support=support,
        confusion=confusion.tolist(),
    )


def confusion_png(m: Metrics, path: Path, cell: int = 24) -> Path:
    """Draw the row-normalised confusion matrix (rows: true class, columns: predicted)."""
    from worker.train.png import draw_text, write_png

    k = len(m.labels)
    margin = 28
    side = margin + k * cell + 4
    img = torch.full((side, side, 3), 255, dtype=torch.uint8)
    for i in range(k):
        row_total = sum(m.confusion[i]) or 1
        for j in range(k):
            frac = m.confusion[i][j] / row_total
            shade = int(255 * (1 - frac))
            # White (0) to dark blue (all of the row's clips).
            colour = torch.tensor([shade, shade, 255 - int(120 * frac)], dtype=torch.uint8)
            y0, x0 = margin + i * cell, margin + j * cell
            img[y0 : y0 + cell - 1, x0 : x0 + cell - 1] = colour
            if m.confusion[i][j]:
                ink = (255, 255, 255) if frac > 0.5 else (0, 0, 0)
                draw_text(img, str(m.confusion[i][j]), x0 + 2, y0 + cell // 2 - 3, ink)
        draw_text(img, str(i), 4, margin + i * cell + cell // 2 - 3, (0, 0, 0))
        draw_text(img, str(i), margin + i * cell + 4, 8, (0, 0, 0))
    write_png(path, img.numpy())
    return path
