from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests import videos
from tests.video.conftest import position_logits
from worker.tsm.meta import ModelMeta
from worker.video.errors import VideoError
from worker.video.pipeline import Progress, index_video, index_videos


def test_index_video_labels_follow_the_content(cfr_video: Path, meta: ModelMeta) -> None:
    seen: list[Progress] = []
    result = index_video(
        cfr_video, position_logits, meta, top_k=2, threshold=0.4, on_progress=seen.append
    )
    assert [(c.start, c.end) for c in result.clips] == [(0, 1), (1, 2), (2, 3)]
    assert [c.top[0][0] for c in result.clips] == ["left", "middle", "right"]
    assert all(len(c.top) == 2 and c.top[0][1] >= c.top[1][1] for c in result.clips)
    # probabilities are the softmax of the predictor's (clip-averaged) logits
    frames = torch.from_numpy(np.stack([np.zeros((4, 48, 48, 3), np.uint8)]))
    assert position_logits(frames).shape == (1, 3)
    assert result.probs is not None
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0)
    assert [(s.label, s.start, s.end) for s in result.segments] == [
        ("left", 0, 1),
        ("middle", 1, 2),
        ("right", 2, 3),
    ]
    assert [p.seconds_done for p in seen] == [1, 2, 3]
    assert result.warnings == []


def test_window_and_stride_overrides(cfr_video: Path, meta: ModelMeta) -> None:
    result = index_video(cfr_video, position_logits, meta, window=2.0, stride=0.5)
    assert [c.start for c in result.clips] == [0.0, 0.5, 1.0]
    assert (result.window, result.stride) == (2.0, 0.5)


def test_same_file_twice_is_identical_and_json_is_stable(cfr_video: Path, meta: ModelMeta) -> None:
    a = index_video(cfr_video, position_logits, meta, batch_size=2)
    b = index_video(cfr_video, position_logits, meta, batch_size=3)
    assert a.to_dict() == b.to_dict()
    text = json.dumps(a.to_dict(), sort_keys=True)
    assert json.dumps(json.loads(text), sort_keys=True) == text
    d = a.to_dict()
    assert set(d) == {
        "path", "model", "window", "stride", "threshold", "duration", "video", "clips",
        "segments", "warnings",
    }  # fmt: skip
    clip = d["clips"][0]
    assert set(clip) == {"index", "start", "end", "top"} and (clip["start"], clip["end"]) == (0, 1)
    assert [t["label"] for t in clip["top"]] == ["left", "middle", "right"]
    assert all(len(str(p["prob"]).split(".")[-1]) <= 6 for c in d["clips"] for p in c["top"])


def test_thumbnails_are_small_jpegs_of_the_middle_frame(cfr_video: Path, meta: ModelMeta) -> None:
    result = index_video(cfr_video, position_logits, meta, thumbnails=True)
    for clip in result.clips:
        assert clip.thumbnail is not None and clip.thumbnail.startswith(b"\xff\xd8")
        with av.open(io.BytesIO(clip.thumbnail), "r") as c:
            frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (48, 48)
    assert index_video(cfr_video, position_logits, meta).clips[0].thumbnail is None


def test_many_videos_bad_ones_reported_and_the_rest_indexed(
    tmp_path: Path, cfr_video: Path, vfr_video: Path, meta: ModelMeta
) -> None:
    bad = videos.make_random_bytes(tmp_path / "bad.mp4")
    results = list(
        index_videos([cfr_video, bad, vfr_video], position_logits, meta, batch_size=4, producers=2)
    )
    errors = [r for r in results if isinstance(r, VideoError)]
    done = {r.path: r for r in results if not isinstance(r, VideoError)}
    assert [e.reason for e in errors] == ["unreadable"]
    assert set(done) == {str(cfr_video), str(vfr_video)}
    alone = index_video(vfr_video, position_logits, meta)
    assert done[str(vfr_video)].to_dict() == alone.to_dict()


def test_truncated_file_is_indexed_with_a_warning(tmp_path: Path, meta: ModelMeta) -> None:
    path = videos.make_truncated_mp4(tmp_path / "cut.mp4", width=64, height=48)
    result = index_video(path, position_logits, meta)
    assert 1 <= len(result.clips) < 4
    assert result.clips[-1].end <= result.duration < 3.5
    assert any("truncated" in w for w in result.warnings)


def test_short_video_gives_one_clip(tmp_path: Path, meta: ModelMeta) -> None:
    path = videos.make_video(tmp_path / "short.mp4", width=64, height=48, duration=0.4)
    (clip,) = index_video(path, position_logits, meta).clips
    assert (clip.start, clip.end) == (0.0, 0.4)


def test_bad_file_raises_video_error(tmp_path: Path, meta: ModelMeta) -> None:
    with pytest.raises(VideoError) as err:
        index_video(videos.make_audio_only(tmp_path / "a.mp4"), position_logits, meta)
    assert err.value.reason == "no_video"


def test_predictor_shape_mismatch_is_an_error(cfr_video: Path, meta: ModelMeta) -> None:
    with pytest.raises(RuntimeError, match="predictor returned"):
        index_video(cfr_video, lambda x: torch.zeros(len(x), 7), meta)


@pytest.mark.slow
def test_real_random_weight_tsm(cfr_video: Path) -> None:
    from worker.tsm.fast import make_predictor
    from worker.tsm.recognizer import build_model

    meta = ModelMeta(
        name="tiny", arch="resnet18", num_segments=4, labels=["a", "b", "c"],
        input_size=48, resize_short=56, window_seconds=1.0, stride_seconds=1.0,
    )  # fmt: skip
    torch.manual_seed(0)
    predictor = make_predictor(build_model(meta), meta, device="cpu", precision="fp32")
    a = index_video(cfr_video, predictor, meta, top_k=3, threshold=0.0)
    b = index_video(cfr_video, predictor, meta, top_k=3, threshold=0.0)
    assert len(a.clips) == 3 and a.to_dict() == b.to_dict()
    assert {s.label for s in a.segments} == {"a", "b", "c"}


def test_jpeg_encoder_reuse_gives_each_image_its_own_bytes() -> None:
    # One MJPEG context per thread and size serves every thumbnail: each result must be the
    # same as a fresh encoder's, whatever was encoded before, and other sizes get their own.
    from worker.video import thumbnails

    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    odd = rng.integers(0, 255, (33, 47, 3), dtype=np.uint8)
    first_a, first_b = thumbnails.encode_jpeg(a), thumbnails.encode_jpeg(b)
    assert thumbnails.encode_jpeg(odd) != first_a
    thumbnails._local.__init__()  # fresh encoders and swscale context
    assert thumbnails.encode_jpeg(b) == first_b and thumbnails.encode_jpeg(a) == first_a
    with av.open(io.BytesIO(thumbnails.encode_jpeg(odd)), "r") as c:
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (46, 32)  # even sides for 4:2:0


def test_a_bug_on_one_file_fails_that_file_only(
    cfr_video: Path, vfr_video: Path, meta: ModelMeta, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.video.decode import ScannedVideo

    real = ScannedVideo.clips

    def trips_on_vfr(video: ScannedVideo, *args: object, **kwargs: object) -> object:
        if str(video.path) == str(vfr_video):
            raise TypeError("a bug")
        return real(video, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ScannedVideo, "clips", trips_on_vfr)
    results = list(index_videos([vfr_video, cfr_video], position_logits, meta))
    (error,) = [r for r in results if isinstance(r, VideoError)]
    assert error.reason == "unreadable" and "TypeError: a bug" in str(error)
    assert [r.path for r in results if not isinstance(r, VideoError)] == [str(cfr_video)]


def test_too_many_clips_is_a_video_error(
    cfr_video: Path, meta: ModelMeta, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.video.sampling.MAX_WINDOWS", 10)
    with pytest.raises(VideoError) as err:
        index_video(cfr_video, position_logits, meta, window=0.5, stride=0.1)
    assert err.value.reason == "bad_options" and "more than 10 clips" in str(err.value)
    assert len(index_video(cfr_video, position_logits, meta, window=0.5, stride=0.5).clips) == 6
