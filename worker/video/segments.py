"""Segments: for each label, maximal runs of consecutive clips scoring at least a threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Segment:
    label: str
    start: float
    end: float
    max: float
    mean: float
    first_clip: int
    last_clip: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_segments(
    probs: np.ndarray,
    starts: Sequence[float],
    ends: Sequence[float],
    labels: Sequence[str],
    threshold: float,
) -> list[Segment]:
    """``probs`` is (clips, labels) in clip order; sorted by start, then by strongest first."""
    if probs.ndim != 2 or probs.shape != (len(starts), len(labels)) or len(ends) != len(starts):
        raise ValueError(
            f"probs {probs.shape} does not match {len(starts)} clips x {len(labels)} labels"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    out: list[Segment] = []
    above = probs >= threshold
    for k in np.nonzero(above.any(axis=0))[0]:
        col = above[:, k]
        # Run boundaries: where the mask switches on (+1) and off (-1).
        edges = np.diff(np.concatenate(([0], col.astype(np.int8), [0])))
        for a_, b_ in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True):
            a, b = int(a_), int(b_)
            run = probs[a:b, k].astype(np.float64)
            out.append(
                Segment(
                    label=labels[int(k)],
                    start=float(starts[a]),
                    end=float(max(ends[a:b])),
                    max=float(run.max()),
                    mean=float(run.mean()),
                    first_clip=a,
                    last_clip=b - 1,
                )
            )
    out.sort(key=lambda s: (s.start, -s.max, s.label))
    return out
