"""The bundled demo model (worker/bundled/demo), judged through the real video pipeline.

Clips come from seeds never used for training (training used seed 1), so this measures
generalisation, not memory. The model must be there: vcat's default model is "demo".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.models import resolve_model
from worker.synth import generate_dataset, generate_timeline
from worker.tsm.fast import Predictor, make_predictor
from worker.tsm.meta import ModelMeta
from worker.tsm.store import StoreError, load_model
from worker.video.pipeline import VideoIndex, index_video, index_videos


@pytest.fixture(scope="module")
def demo() -> tuple[Predictor, ModelMeta]:
    try:
        path = resolve_model("demo")
    except StoreError as exc:
        pytest.fail(f"the bundled demo model is missing: {exc}")
    model, meta = load_model(path)
    return make_predictor(model, meta, device="cpu", precision="fp32"), meta


def test_bundled_model_meta(demo: tuple[Predictor, ModelMeta]) -> None:
    from worker.synth import ACTIONS, CLIP_SECONDS

    _, meta = demo
    assert sorted(meta.labels) == sorted(ACTIONS)
    assert meta.window_seconds == CLIP_SECONDS
    assert 0 < meta.stride_seconds <= meta.window_seconds
    size = sum(f.stat().st_size for f in resolve_model("demo").iterdir())
    assert size <= 20 * 2**20


@pytest.mark.slow
def test_bundled_model_top1_on_fresh_clips(
    demo: tuple[Predictor, ModelMeta], tmp_path: Path
) -> None:
    predictor, meta = demo
    clips = generate_dataset(tmp_path, 9, seed=2026)  # 11 classes x 9 = 99 clips
    clips += generate_dataset(tmp_path / "extra", 1, seed=2027)[:1]
    assert len(clips) == 100
    truth = {str(path): label for path, label in clips}
    correct, seen = 0, 0
    for result in index_videos(list(truth), predictor, meta, batch_size=16):
        assert isinstance(result, VideoIndex), result
        # One window over the whole clip, exactly as `vcat index` cuts a 2.5 s video.
        assert len(result.clips) == 1
        correct += result.clips[0].top[0][0] == truth[str(result.path)]
        seen += 1
    assert seen == 100
    assert correct >= 90, f"top-1 {correct}/100"


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


@pytest.mark.slow
def test_timeline_ground_truth_is_found(demo: tuple[Predictor, ModelMeta], tmp_path: Path) -> None:
    predictor, meta = demo
    video = tmp_path / "timeline.mp4"
    truth = generate_timeline(video, seed=99)
    result = index_video(video, predictor, meta)
    found = 0
    for t in truth:
        span = (float(t["start"]), float(t["end"]))
        ious = [_iou(span, (s.start, s.end)) for s in result.segments if s.label == t["action"]]
        found += max(ious, default=0.0) >= 0.5
    assert found >= 0.8 * len(truth), f"{found}/{len(truth)} segments found"
