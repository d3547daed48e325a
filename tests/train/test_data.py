"""Dataset discovery, bad input, splits and TSN sampling."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from worker.train.data import (
    ClipDataset,
    DataError,
    load_dataset,
    segment_indices,
    split,
)


def test_folder_dataset(tiny_data: Path) -> None:
    data = load_dataset(tiny_data)
    assert data.labels == ["moving something up", "something appearing"]
    assert len(data.items) == 8 and not data.skipped
    assert all(abs(item.seconds - 2.5) < 0.2 for item in data.items)
    assert data.flip_map == {
        "moving something up": "moving something up",
        "something appearing": "something appearing",
    }
    assert data.reverse_map == {}  # the tiny set's classes have no reversed partner in it


def test_csv_dataset(tiny_data: Path, tmp_path: Path) -> None:
    rows = ["path,label"] + [
        f"{p},{'a' if 'up' in p.parent.name else 'b'}" for p in sorted(tiny_data.rglob("*.mp4"))
    ]
    csv = tmp_path / "list.csv"
    csv.write_text("\n".join(rows) + "\n")
    data = load_dataset(csv)
    assert data.labels == ["a", "b"] and len(data.items) == 8


def test_unreadable_videos_are_skipped_and_counted(data_copy: Path) -> None:
    bad = data_copy / "moving_something_up" / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    seen: list[Path] = []
    data = load_dataset(data_copy, on_skip=lambda p, _: seen.append(p))
    assert [p for p, _ in data.skipped] == [bad] == seen
    assert len(data.items) == 8


def test_empty_class_folder(data_copy: Path) -> None:
    (data_copy / "waving").mkdir()
    with pytest.raises(DataError, match="waving has no video files"):
        load_dataset(data_copy)


def test_class_with_only_unreadable_videos(data_copy: Path) -> None:
    (data_copy / "waving").mkdir()
    (data_copy / "waving" / "x.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"no readable videos for class.*waving"):
        load_dataset(data_copy)


def test_single_class(data_copy: Path) -> None:
    for clip in (data_copy / "something_appearing").iterdir():
        clip.unlink()
    (data_copy / "something_appearing").rmdir()
    with pytest.raises(DataError, match="at least 2 classes"):
        load_dataset(data_copy)


def test_broken_label_map(data_copy: Path) -> None:
    (data_copy / "reverse_map.json").write_text("[1, 2")
    with pytest.raises(DataError, match=r"reverse_map\.json"):
        load_dataset(data_copy)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path / "empty")


def test_split_is_stratified_and_deterministic(tiny_data: Path) -> None:
    data = load_dataset(tiny_data)
    train, val = split(data, 0.25, seed=1)
    assert sorted(train + val) == list(range(8))
    assert sorted(data.items[i].label for i in val) == data.labels  # one per class
    assert split(data, 0.25, seed=1) == (train, val)


def test_segment_indices() -> None:
    assert segment_indices(16, 8, None) == [1, 3, 5, 7, 9, 11, 13, 15]  # segment middles
    assert segment_indices(3, 4, None) == [0, 1, 1, 2]  # fewer frames than T: repeats
    rng = random.Random(0)
    for _ in range(20):
        picked = segment_indices(30, 8, rng)
        assert all(30 * i // 8 <= f < 30 * (i + 1) // 8 for i, f in enumerate(picked))


def test_clip_dataset_flips_with_label_map(tiny_data: Path) -> None:
    data = load_dataset(tiny_data)
    data.flip_map = {"moving something up": "something appearing"}  # a fake mirror pair
    ds = ClipDataset(data, range(4), 4, 32, 32, train=True, seed=0)
    labels = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            clip, label = ds[i]
            assert clip.shape == (4, 32, 32, 3)
            labels.add(label)
    assert labels == {0, 1}  # flipped "up" clips took the mapped label


def test_clip_dataset_reverses_time_with_label_map(tiny_data: Path) -> None:
    data = load_dataset(tiny_data)
    data.flip_map = {}
    plain = ClipDataset(data, range(4), 4, 32, 32, train=True, seed=0)  # all "moving something up"
    data.reverse_map = {"moving something up": "something appearing"}  # a fake reversed pair
    reversing = ClipDataset(data, range(4), 4, 32, 32, train=True, seed=0)
    seen = set()
    for epoch in range(4):
        plain.set_epoch(epoch)
        reversing.set_epoch(epoch)
        for i in range(4):
            (clip, label), (same, label0) = reversing[i], plain[i]
            assert label0 == 0
            seen.add(label)
            # Same sampling, crop and jitter; a reversed clip is the plain one played backwards.
            assert clip.equal(same.flip(0) if label == 1 else same)
    assert seen == {0, 1}
    plain = ClipDataset(data, range(8), 4, 32, 32, train=False)
    assert plain[0][0].equal(plain[0][0])  # evaluation is deterministic
