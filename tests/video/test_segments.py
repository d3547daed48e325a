from __future__ import annotations

import numpy as np
import pytest

from worker.video.segments import find_segments


def test_maximal_runs_per_label() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3], [0.8, 0.2]])
    starts, ends = [0, 2, 4, 6, 8], [2, 4, 6, 8, 10]
    segs = find_segments(probs, starts, ends, ["a", "b"], threshold=0.5)
    got = [(s.label, s.start, s.end, s.first_clip, s.last_clip) for s in segs]
    assert got == [("a", 0, 4, 0, 1), ("b", 4, 6, 2, 2), ("a", 6, 10, 3, 4)]
    assert segs[0].max == pytest.approx(0.9)
    assert segs[0].mean == pytest.approx(0.75)
    assert segs[2].mean == pytest.approx(0.75)


def test_threshold_is_inclusive_and_nothing_above_gives_nothing() -> None:
    probs = np.array([[0.5], [0.49]])
    assert [s.last_clip for s in find_segments(probs, [0, 1], [1, 2], ["x"], 0.5)] == [0]
    assert find_segments(probs, [0, 1], [1, 2], ["x"], 0.51) == []


def test_overlapping_clips_end_at_the_latest_end() -> None:
    probs = np.array([[0.9], [0.9]])
    (seg,) = find_segments(probs, [0.0, 0.5], [2.0, 2.5], ["x"], 0.5)
    assert (seg.start, seg.end) == (0.0, 2.5)


def test_shape_mismatch_and_bad_threshold() -> None:
    with pytest.raises(ValueError):
        find_segments(np.zeros((2, 3)), [0, 1], [1, 2], ["a", "b"], 0.5)
    with pytest.raises(ValueError):
        find_segments(np.zeros((1, 1)), [0], [1], ["a"], 1.5)
