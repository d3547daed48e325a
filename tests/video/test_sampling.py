from __future__ import annotations

import pytest

from worker.video.sampling import frame_for_time, plan_windows, segment_centres


def test_windows_tile_with_stride_and_cover_the_tail() -> None:
    ws = plan_windows(7.0, window=2.0, stride=2.0, num_frames=4)
    assert [(w.start, w.end) for w in ws] == [(0, 2), (2, 4), (4, 6), (5, 7)]
    assert [w.index for w in ws] == [0, 1, 2, 3]
    assert ws[0].times == (0.25, 0.75, 1.25, 1.75)
    assert ws[3].times == (5.25, 5.75, 6.25, 6.75)


def test_exact_fit_has_no_extra_tail_window() -> None:
    ws = plan_windows(6.0, window=2.0, stride=2.0, num_frames=8)
    assert [(w.start, w.end) for w in ws] == [(0, 2), (2, 4), (4, 6)]


def test_overlapping_windows() -> None:
    ws = plan_windows(3.0, window=2.0, stride=0.5, num_frames=2)
    assert [w.start for w in ws] == [0.0, 0.5, 1.0]
    assert ws[1].times == (1.0, 2.0)


def test_short_video_gives_one_clip_over_the_whole_video() -> None:
    (w,) = plan_windows(0.8, window=2.0, stride=2.0, num_frames=4)
    assert (w.start, w.end) == (0.0, 0.8)
    assert w.times == pytest.approx((0.1, 0.3, 0.5, 0.7))


def test_long_video_starts_do_not_drift() -> None:
    ws = plan_windows(3600.0, window=0.1, stride=0.1, num_frames=1)
    assert ws[-1].start == pytest.approx(3599.9, abs=1e-9)
    assert len(ws) == 36000


def test_segment_centres_match_tsm_uniform_sampling() -> None:
    # TSM's index rule int(tick/2 + tick*i) with tick = n/T picks the frame covering each centre.
    n, t, fps = 64, 8, 25.0
    tick = n / t
    expected = [int(tick / 2 + tick * i) for i in range(t)]
    times = [i / fps for i in range(n)]
    got = [frame_for_time(times, c) for c in segment_centres(0.0, n / fps, t)]
    assert got == expected


def test_frame_for_time_picks_the_frame_on_screen() -> None:
    times = [0.0, 0.04, 0.3, 0.31]
    assert [frame_for_time(times, x) for x in (-1, 0.0, 0.039, 0.04, 0.299, 0.305, 9)] == [
        0,
        0,
        0,
        1,
        1,
        2,
        3,
    ]


@pytest.mark.parametrize(
    ("duration", "window", "stride", "frames"),
    [
        (0.0, 1, 1, 4), (5, 0, 1, 4), (5, 1, -1, 4), (5, 1, 1, 0),
        (5, float("nan"), 1, 4), (5, 1, float("inf"), 4), (5, 1, 0.001, 4), (5, 601, 1, 4),
        (3600.0 * 24, 1, 0.01, 4),  # 8.6M clips: refused before planning any
    ],
)  # fmt: skip
def test_bad_arguments(duration: float, window: float, stride: float, frames: int) -> None:
    with pytest.raises(ValueError):
        plan_windows(duration, window, stride, frames)
