"""The bundled demo model (models/demo), judged through the real video pipeline.

Clips come from seeds never used for training (training used seed 1), so this measures
generalisation, not memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.synth import generate_dataset, generate_timeline
from worker.tsm.fast import Predictor, make_predictor
from worker.tsm.meta import ModelMeta
from worker.tsm.store import load_model
from worker.video.pipeline import index_video

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def demo() -> tuple[Predictor, ModelMeta]:
    if not (DEMO / "meta.json").is_file():
        pytest.skip(f"the bundled demo model is not trained yet ({DEMO} is missing)")
    model, meta = load_model(DEMO)
    return make_predictor(model, meta, device="cpu", precision="fp32"), meta


@pytest.mark.slow
def test_bundled_model_top1_on_fresh_clips(
    demo: tuple[Predictor, ModelMeta], tmp_path: Path
) -> None:
    predictor, meta = demo
    clips = generate_dataset(tmp_path, 9, seed=2026)  # 11 classes x 9 = 99 clips
    clips += generate_dataset(tmp_path / "extra", 1, seed=2027)[:1]
    assert len(clips) == 100
    correct = 0
    for path, label in clips:
        # One window over the whole clip, exactly as `vcat index` would cut a 2.5 s video.
        result = index_video(path, predictor, meta, batch_size=1)
        assert len(result.clips) == 1
        correct += result.clips[0].top[0][0] == label
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
