"""The synthetic benchmark: real MP4s, deterministic, and motion in the stated direction."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest

from worker.synth import (
    ACTIONS,
    CLIP_SECONDS,
    FLIP_MAP,
    FLIP_MAP_FILE,
    FPS,
    REVERSE_MAP,
    REVERSE_MAP_FILE,
    SIZE,
    SynthError,
    _motion,
    folder_name,
    generate_dataset,
    generate_timeline,
    render_action,
)


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_dataset_layout_and_determinism(tmp_path: Path) -> None:
    actions = ("moving something from left to right", "holding something still")
    a = generate_dataset(tmp_path / "a", 2, seed=5, actions=actions)
    b = generate_dataset(tmp_path / "b", 2, seed=5, actions=actions)
    assert [p.relative_to(tmp_path / "a") for p, _ in a] == [
        p.relative_to(tmp_path / "b") for p, _ in b
    ]
    assert {p.parent.name for p, _ in a} == {folder_name(x) for x in actions}
    frames = _decode(a[0][0])
    assert frames.shape == (round(CLIP_SECONDS * FPS), SIZE[1], SIZE[0], 3)
    np.testing.assert_array_equal(frames, _decode(b[0][0]))
    assert not np.array_equal(frames, _decode(a[1][0]))  # clips of a class differ
    flips = json.loads((tmp_path / "a" / FLIP_MAP_FILE).read_text())
    assert flips == {"holding something still": "holding something still"}  # partner absent
    reverses = json.loads((tmp_path / "a" / REVERSE_MAP_FILE).read_text())
    assert reverses == {"holding something still": "holding something still"}


@pytest.mark.parametrize(
    ("action", "axis", "sign"),
    [
        ("moving something from left to right", 0, 1),
        ("moving something from right to left", 0, -1),
        ("moving something up", 1, -1),  # image y points down
        ("moving something down", 1, 1),
        ("moving something closer", 2, 1),
        ("moving something away", 2, -1),
        ("turning something clockwise", 3, 1),
        ("turning something counterclockwise", 3, -1),
        ("something appearing", 4, 1),
        ("something disappearing", 4, -1),
    ],
)
def test_motion_direction(action: str, axis: int, sign: int) -> None:
    for seed in range(5):
        pose = _motion(action, np.random.default_rng(seed))
        assert sign * (pose(1.0)[axis] - pose(0.0)[axis]) > 0


def test_single_frames_do_not_give_direction_away() -> None:
    # The start of left-to-right is drawn from the same distribution as the end of right-to-left.
    lr = [_motion(ACTIONS[0], np.random.default_rng(s))(0.0)[0] for s in range(300)]
    rl = [_motion(ACTIONS[1], np.random.default_rng(s))(1.0)[0] for s in range(300)]
    assert abs(np.mean(lr) - np.mean(rl)) < 1e-9


def test_flip_map_is_an_involution() -> None:
    assert set(FLIP_MAP) == set(ACTIONS)
    assert all(FLIP_MAP[FLIP_MAP[a]] == a for a in ACTIONS)


def test_reverse_map_is_an_involution() -> None:
    assert set(REVERSE_MAP) == set(ACTIONS)
    assert all(REVERSE_MAP[REVERSE_MAP[a]] == a for a in ACTIONS)


def test_still_object_really_is_still() -> None:
    rng = np.random.default_rng(0)
    frames = np.stack(list(render_action("holding something still", 6, rng)))
    moving = np.stack(list(render_action("moving something up", 6, np.random.default_rng(0))))
    assert frames.shape == (6, SIZE[1], SIZE[0], 3)
    assert (
        np.abs(np.diff(frames.astype(int), axis=0)).mean()
        < np.abs(np.diff(moving.astype(int), axis=0)).mean()
    )


def test_timeline_ground_truth(tmp_path: Path) -> None:
    video = tmp_path / "t.mp4"
    truth = generate_timeline(video, seed=3, seconds=14)
    assert json.loads(video.with_suffix(".json").read_text()) == truth
    assert truth[0]["start"] == 0
    for prev, nxt in itertools.pairwise(truth):
        assert prev["end"] == nxt["start"] and prev["action"] != nxt["action"]
    assert all(t["action"] in ACTIONS for t in truth)
    assert len(_decode(video)) == round(float(truth[-1]["end"]) * FPS)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="per-class"):
        generate_dataset(tmp_path, 0, seed=1)
    with pytest.raises(SynthError, match="unknown"):
        generate_dataset(tmp_path, 1, seed=1, actions=("dancing",))
    with pytest.raises(SynthError):
        generate_timeline(tmp_path / "x.mp4", seed=1, seconds=1)
