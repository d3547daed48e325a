from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import videos
from worker.video.decode import (
    DecodeStats,
    ScannedVideo,
    iter_clips,
    plan_geometry,
    scan_timeline,
)
from worker.video.errors import VideoError
from worker.video.probe import probe_video
from worker.video.sampling import frame_for_time, plan_windows


def decoded_times(path: Path) -> list[float]:
    """Every frame's start time, through the same timeline origin the pipeline uses."""
    import av

    origin = scan_timeline(path).origin
    with av.open(str(path)) as c:
        return [float((f.pts or 0) * (f.time_base or 1) - origin) for f in c.decode(video=0)]


@pytest.mark.parametrize("kind", ["cfr", "vfr"])
def test_sampled_timestamps_are_exact(kind: str, cfr_video: Path, vfr_video: Path) -> None:
    path = cfr_video if kind == "cfr" else vfr_video
    times = decoded_times(path)
    expected_frames = [i / 25 for i in range(75)] if kind == "cfr" else videos.vfr_times(3.0)
    assert times == expected_frames  # the factory wrote exactly these timestamps
    tl = scan_timeline(path)
    # The end is the last frame's start plus its duration as muxed (CFR: exactly 3 s).
    assert times[-1] < tl.duration <= 3.0 + 1e-9
    if kind == "cfr":
        assert tl.duration == 3.0
    windows = plan_windows(tl.duration, 1.0, 0.75, 4)
    assert [w.start for w in windows] == [0.0, 0.75, 1.5, tl.duration - 1.0]
    stats = DecodeStats()
    clips = list(iter_clips(path, windows, (64, 64), tl.origin, stats))
    assert [c.window.index for c in clips] == [0, 1, 2, 3]
    for clip in clips:
        want = tuple(times[frame_for_time(times, t)] for t in clip.window.times)
        assert clip.frame_times == want
        assert clip.end == clip.window.end
        # Content follows time: the square sits where the pattern put it at that frame's time.
        for frame, t in zip(clip.frames, clip.frame_times, strict=True):
            ref = videos.upright_frame(96, 64, t, 3.0)[:, 16:80]
            got_x, ref_x = videos.square_x_fraction(frame), videos.square_x_fraction(ref)
            assert np.isnan(got_x) == np.isnan(ref_x)
            if not np.isnan(ref_x):
                assert abs(got_x - ref_x) < 0.05
    # Only sampled frames go through swscale, each once even when windows share it.
    assert stats.frames_converted <= sum(len(w.times) for w in windows)
    assert stats.frames_converted < len(times) / 3


def test_cfr_sample_indices_match_tsm_rule(cfr_video: Path) -> None:
    tl = scan_timeline(cfr_video)
    (w,) = plan_windows(tl.duration, 3.0, 3.0, 8)
    (clip,) = iter_clips(cfr_video, [w], (64, 48), tl.origin)
    tick = 75 / 8
    assert [round(t * 25) for t in clip.frame_times] == [int(tick / 2 + tick * i) for i in range(8)]
    assert clip.frames.shape == (8, 48, 48, 3)
    assert clip.frames.dtype == np.uint8


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_is_applied(vdir: Path, rotation: int) -> None:
    path = videos.make_video(
        vdir / f"rot{rotation}.mp4", width=64, height=64, duration=1.0, rotation=rotation
    )
    info = probe_video(path)
    assert info.rotation == rotation
    tl = scan_timeline(path)
    windows = plan_windows(tl.duration, 0.5, 0.5, 2)
    clips = list(iter_clips(path, windows, (64, 64), tl.origin))
    first, last = clips[0].frames[0], clips[-1].frames[-1]

    def blue(block: np.ndarray) -> bool:
        r, g, b = block.reshape(-1, 3).mean(axis=0)
        return bool(b > 150 and r < 90 and g < 90)

    assert blue(first[1:6, 1:6])  # upright top-left marker
    assert not any(blue(c) for c in (first[1:6, -6:-1], first[-6:-1, 1:6], first[-6:-1, -6:-1]))
    # The square moves left to right in the upright picture.
    assert videos.square_x_fraction(first) < 0.3 < 0.7 < videos.square_x_fraction(last)


def test_portrait_probe_reports_displayed_size(vdir: Path) -> None:
    path = videos.make_video(vdir / "portrait.mp4", width=48, height=80, rotation=270,
                             duration=0.4)  # fmt: skip
    info = probe_video(path)
    assert (info.width, info.height, info.coded_width, info.coded_height) == (48, 80, 80, 48)
    tl = scan_timeline(path)
    (clip,) = iter_clips(path, plan_windows(tl.duration, 1, 1, 2), (56, 48), tl.origin)
    assert clip.frames.shape == (2, 48, 48, 3)


def test_probe_describes_the_video(cfr_video: Path) -> None:
    info = probe_video(cfr_video)
    assert (info.width, info.height, info.fps, info.codec, info.rotation) == (96, 64, 25, "h264", 0)
    assert info.duration == pytest.approx(3.0)
    assert info.frame_count == 75
    assert not info.has_audio
    assert "mp4" in info.container


def test_first_video_stream_and_audio_ignored(vdir: Path) -> None:
    path = videos.make_video(
        vdir / "av.mkv", width=64, height=48, duration=1.0, audio=True, second_video=True
    )
    info = probe_video(path)
    assert info.has_audio and info.container == "matroska,webm" and info.codec == "h264"
    tl = scan_timeline(path)
    clips = list(iter_clips(path, plan_windows(tl.duration, 0.5, 0.5, 2), (48, 48), tl.origin))
    assert len(clips) == 2
    # The first (h264, moving square) stream was decoded, not the flat grey second one.
    assert videos.square_x_fraction(clips[1].frames[-1]) > 0.5


@pytest.mark.parametrize(
    ("codec", "suffix"), [("vp9", "webm"), ("mpeg4", "avi"), ("mjpeg", "mkv"), ("hevc", "mp4")]
)
def test_other_codecs_and_containers(vdir: Path, codec: str, suffix: str) -> None:
    path = videos.make_video(vdir / f"c_{codec}.{suffix}", width=64, height=48, duration=0.8,
                             codec=codec)  # fmt: skip
    tl = scan_timeline(path)
    assert tl.duration == pytest.approx(0.8, abs=0.05)
    (clip,) = iter_clips(path, plan_windows(tl.duration, 1.0, 1.0, 4), (48, 48), tl.origin)
    assert clip.frames.shape == (4, 48, 48, 3)


def test_geometry_resizes_short_side_then_crops() -> None:
    g = plan_geometry(1280, 720, 0, 256, 224)
    assert (g.scaled_width, g.scaled_height, g.crop, g.rot_k) == (455, 256, 224, 0)
    g = plan_geometry(720, 1280, 90, 256, 224)
    assert (g.scaled_width, g.scaled_height, g.rot_k) == (256, 455, 1)
    with pytest.raises(ValueError):
        plan_geometry(100, 100, 0, 128, 224)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


BAD: list[tuple[str, Callable[[Path], Path], str]] = [
    ("zero.mp4", videos.make_zero_byte, "empty"),
    ("random.mp4", videos.make_random_bytes, "unreadable"),
    ("audio.mp4", videos.make_audio_only, "no_video"),
    ("cover.mp3", videos.make_audio_with_cover, "no_video"),  # its picture is no video
    ("http:/host/a.mp4", lambda p: Path("http:/host/a.mp4"), "not_allowed"),  # // collapsed
    ("picture.png", videos.make_image, "image"),
    ("zeros.mp4", videos.make_zero_frames, "no_frames"),
    ("huge.h264", videos.make_huge_header, "bad_dimensions"),
    ("missing.mp4", lambda p: p, "not_found"),
    ("dir.mp4", lambda p: _mkdir(p), "not_a_file"),
    ("list.m3u8", lambda p: (p.write_text("#EXTM3U\nhttp://x/a.ts\n"), p)[1], "not_allowed"),
    ("list.mp4", lambda p: (p.write_text("ffconcat version 1.0\nfile a.mp4\n"), p)[1],
     "not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gives_typed_error(
    tmp_path: Path, name: str, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path / name)
    with pytest.raises(VideoError) as err:
        probe_video(path)
    assert err.value.reason == reason
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(VideoError) as again:  # the pipeline's one-pass probe says the same
        ScannedVideo(path)
    assert again.value.reason == reason


def test_one_pass_probe_and_scan_is_probe_plus_scan(
    vdir: Path, cfr_video: Path, vfr_video: Path
) -> None:
    others = [
        videos.make_video(vdir / "ps_rot.mp4", width=48, height=80, rotation=90, duration=0.6),
        videos.make_video(vdir / "ps.h264", width=64, height=48, duration=0.6, container="h264"),
        videos.make_video(vdir / "ps.webm", width=64, height=48, duration=0.6, codec="vp9"),
        videos.make_truncated_mp4(vdir / "ps_cut.mp4", width=64, height=48),
    ]
    for path in [cfr_video, vfr_video, *others]:
        with ScannedVideo(path) as video:
            assert (video.info, video.timeline) == (probe_video(path), scan_timeline(path)), path


def test_urls_and_protocol_prefixes_are_never_opened(tmp_path: Path, cfr_video: Path) -> None:
    with pytest.raises(VideoError) as err:
        probe_video("http://127.0.0.1:9/x.mp4")
    assert err.value.reason == "not_allowed"
    # A local file whose name looks like an FFmpeg protocol is still just a local file.
    odd = tmp_path / "concat:x.mp4"
    odd.write_bytes(cfr_video.read_bytes())
    assert probe_video(odd).frame_count == 75
    with pytest.raises(VideoError) as err:  # no such file: its name says why it was not opened
        probe_video("concat:x.mp4|y.mp4")
    assert err.value.reason == "not_allowed"


def test_truncated_file_decodes_what_is_there(tmp_path: Path) -> None:
    path = videos.make_truncated_mp4(tmp_path / "cut.mp4", width=64, height=48)
    assert probe_video(path).duration == pytest.approx(4.0)
    tl = scan_timeline(path)
    assert 0.5 < tl.duration < 3.5
    windows = plan_windows(4.0, 1.0, 1.0, 2)  # planned from the header's claim
    stats = DecodeStats()
    clips = list(iter_clips(path, windows, (48, 48), tl.origin, stats))
    assert 0 < len(clips) < 4
    assert stats.warnings and "skipped" in stats.warnings[-1]


def test_stream_without_duration_frame_count_or_timestamps(vdir: Path) -> None:
    path = videos.make_video(vdir / "raw.h264", width=64, height=48, duration=1.0, container="h264")
    info = probe_video(path)
    assert (info.duration, info.frame_count, info.container) == (None, None, "h264")
    tl = scan_timeline(path)
    assert tl.duration == pytest.approx(1.0)
    clips = list(iter_clips(path, plan_windows(tl.duration, 0.5, 0.5, 2), (48, 48), tl.origin))
    assert [c.frame_times for c in clips] == [(0.12, 0.36), (0.6, 0.84)]


@pytest.mark.parametrize("vfr", [False, True])
def test_skipping_unsampled_frames_changes_nothing(vfr: bool, tmp_path: Path) -> None:
    # With every frame's pts known, non-reference frames no window samples are not decoded;
    # the clips must be bit-identical to decoding everything, and fewer frames decoded.
    path = videos.make_video(
        tmp_path / "b.mp4", width=96, height=64, duration=8.0, vfr=vfr, bframes=3, gop=50
    )
    tl = scan_timeline(path)
    assert tl.pts is not None and len(tl.pts) == tl.packets
    windows = plan_windows(tl.duration, 2.0, 1.5, 8)
    full_stats, skip_stats = DecodeStats(), DecodeStats()
    full = list(iter_clips(path, windows, (64, 64), tl.origin, full_stats))
    skipped = list(iter_clips(path, windows, (64, 64), tl.origin, skip_stats, frame_pts=tl.pts))
    assert len(full) == len(skipped) == len(windows)
    for a, b in zip(full, skipped, strict=True):
        assert a.window == b.window and a.frame_times == b.frame_times and a.end == b.end
        assert np.array_equal(a.frames, b.frames)
    assert skip_stats.frames_decoded < full_stats.frames_decoded


@pytest.mark.parametrize(
    ("bframes", "open_gop", "name"),
    [(0, False, "g.mp4"), (3, False, "g.mp4"), (3, True, "g.mp4"), (3, False, "g.ts")],
)
def test_packets_no_sampled_frame_needs_are_not_decoded(
    bframes: int, open_gop: bool, name: str, tmp_path: Path
) -> None:
    # With closed GOPs (every keyframe an IDR picture), the packets after a GOP's last sampled
    # frame are not decoded: nothing after the next IDR refers to them. Open GOPs, whose
    # B-frames refer back past a keyframe, keep them. Bit-identical clips either way; MPEG-TS
    # carries H.264 with start codes instead of MP4's length prefixes.
    path = videos.make_video(
        tmp_path / name, width=96, height=64, duration=8.0, bframes=bframes, gop=12,
        open_gop=open_gop,
    )  # fmt: skip
    tl = scan_timeline(path)
    assert tl.order is not None and len(tl.order.pts) == tl.packets
    keyframes = tl.packets // 12 + (tl.packets % 12 > 0)
    assert len(tl.order.restarts) == (1 if open_gop else keyframes)
    windows = plan_windows(tl.duration, 2.0, 1.5, 8)
    clips, stats = {}, {}
    for name, extra in (
        ("all", {}),
        ("nonref", {"frame_pts": tl.pts}),
        ("unused", {"frame_pts": tl.pts, "decode_order": tl.order}),
    ):
        stats[name] = DecodeStats()
        clips[name] = list(iter_clips(path, windows, (64, 64), tl.origin, stats[name], **extra))
    assert len(clips["unused"]) == len(windows)
    for a, b in zip(clips["all"], clips["unused"], strict=True):
        assert a.window == b.window and a.frame_times == b.frame_times and a.end == b.end
        assert np.array_equal(a.frames, b.frames)
    if not open_gop:
        assert stats["unused"].frames_decoded < stats["nonref"].frames_decoded


def test_small_frames_decode_on_one_thread_with_the_same_pixels(tmp_path: Path) -> None:
    # Frame threading costs more than it gains on small frames (worker.video.decode.SMALL_FRAME);
    # whatever the thread count, the clips are the same.
    import av

    from worker.video.decode import _decode_threads

    small = videos.make_video(tmp_path / "s.mp4", width=320, height=240, duration=2.0)
    large = videos.make_video(tmp_path / "l.mp4", width=1280, height=720, duration=0.2)
    for path, expected in ((small, 1), (large, 0)):
        with av.open(str(path)) as container:
            assert _decode_threads(container.streams.video[0]) == expected
    tl = scan_timeline(small)
    windows = plan_windows(tl.duration, 1.0, 0.5, 4)
    auto = list(iter_clips(small, windows, (64, 64), tl.origin))
    threaded = list(iter_clips(small, windows, (64, 64), tl.origin, threads=2))
    assert [c.frame_times for c in auto] == [c.frame_times for c in threaded]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(auto, threaded, strict=True))


def test_a_window_starting_while_the_last_frame_shows_is_kept(cfr_video: Path) -> None:
    """3 s at 25 fps: the last frame starts at 2.96 s and ends at 3.0; a tail window starting at
    2.97 takes it, without a 'decoding stopped' warning (there was one)."""
    timeline = scan_timeline(cfr_video)
    windows = plan_windows(timeline.duration, 0.03, 1.0, 2)
    assert windows[-1].start == pytest.approx(2.97)
    stats = DecodeStats()
    clips = list(iter_clips(cfr_video, windows, (64, 48), timeline.origin, stats))
    assert [c.window.index for c in clips] == [w.index for w in windows]
    assert stats.warnings == []


REWIND_CASES = [  # (file, make, whether the decode must open the file again)
    ("b.mp4", dict(width=96, height=64, duration=3.0, bframes=3, gop=20), False),
    ("vfr.mp4", dict(width=64, height=48, duration=2.0, vfr=True), False),
    ("rot.mp4", dict(width=48, height=80, duration=1.2, rotation=90), False),
    ("av.mkv", dict(width=64, height=48, duration=1.2, audio=True), False),
    ("v.webm", dict(width=64, height=48, duration=1.2, codec="vp9"), False),
    ("raw.h264", dict(width=64, height=48, duration=1.2, container="h264"), True),  # no pts
    ("big.mp4", dict(width=800, height=600, duration=0.4), True),  # threaded decoder wanted
]


@pytest.mark.parametrize(
    ("name", "make", "reopens"), REWIND_CASES, ids=[c[0] for c in REWIND_CASES]
)
def test_one_open_gives_the_clips_of_a_fresh_decode(
    tmp_path: Path, name: str, make: dict[str, Any], reopens: bool
) -> None:
    # The pipeline's ScannedVideo decodes on the container its probe and scan read to the end,
    # rewound; it must sample exactly what a fresh open does, and open again where a rewind
    # cannot be proved exact.
    path = videos.make_video(tmp_path / name, **make)
    with ScannedVideo(path) as video:
        timeline = video.timeline
        windows = plan_windows(timeline.duration, 0.5, 0.4, 4)
        stats = DecodeStats()
        rewound = list(video.clips(windows, (48, 48), stats))
        assert video.reopened == reopens
    fresh_stats = DecodeStats()
    fresh = list(
        iter_clips(path, windows, (48, 48), timeline.origin, fresh_stats, frame_pts=timeline.pts)
    )
    assert len(rewound) == len(fresh) == len(windows)
    for a, b in zip(rewound, fresh, strict=True):
        assert a.window == b.window and a.frame_times == b.frame_times and a.end == b.end
        assert np.array_equal(a.frames, b.frames)
    assert stats == fresh_stats
    assert (video.info, timeline) == (probe_video(path), scan_timeline(path))


def _os_threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in Linux /proc")
def test_decoding_and_thumbnails_start_no_threads(tmp_path: Path) -> None:
    # A small video decodes, converts and encodes its thumbnails on the calling thread: FFmpeg's
    # default of a thread per core (swscale, the MJPEG encoder) cost short videos CPU and
    # hand-offs that waited for a core (worker.video.decode.SWSCALE_THREADS).
    from worker.video import thumbnails

    path = videos.make_video(tmp_path / "s.mp4", width=320, height=240, duration=1.0)
    started: list[set[str]] = []  # thread ids that appeared, after each clip

    def decode_and_encode() -> None:
        before = _os_threads()
        with ScannedVideo(path) as video:
            windows = plan_windows(video.timeline.duration, 0.5, 0.25, 4)
            for clip in video.clips(windows, (64, 64), None):
                thumbnails.encode_jpeg(clip.frames[0])
                started.append(_os_threads() - before)

    # A fresh thread: the thumbnail encoder is opened once per thread, here on first use.
    worker = threading.Thread(target=decode_and_encode)
    worker.start()
    worker.join()
    assert started and not set().union(*started)
