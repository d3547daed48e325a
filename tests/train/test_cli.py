"""``vcat synth``, ``vcat train`` and ``vcat eval`` end to end on a seconds-sized dataset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vcat.cli import app
from vcat.settings import get_settings

runner = CliRunner()


@pytest.fixture
def vcat_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("VCAT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("VCAT_DEVICE", "cpu")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_synth_commands(tmp_path: Path) -> None:
    res = runner.invoke(app, ["synth", str(tmp_path / "d"), "--per-class", "1", "--seed", "4"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "d").rglob("*.mp4"))) == 11
    video = tmp_path / "t.mp4"
    res = runner.invoke(app, ["synth", "--timeline", str(video), "--seconds", "9", "--seed", "4"])
    assert res.exit_code == 0, res.output
    assert json.loads(video.with_suffix(".json").read_text())[0]["start"] == 0
    for bad in (["synth"], ["synth", str(tmp_path / "e"), "--per-class", "0"],
                ["synth", "--timeline", str(tmp_path / "t.avi")]):  # fmt: skip
        res = runner.invoke(app, bad)
        assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output


def test_train_then_eval(vcat_home: Path, tiny_data: Path) -> None:
    args = ["--segments", "2", "--input-size", "32", "--epochs", "1", "--max-steps", "1"]
    res = runner.invoke(app, ["train", str(tiny_data), "--out", "m", *args])
    assert res.exit_code == 0, res.output
    assert "saved model 'm'" in res.output
    png = vcat_home / "confusion.png"
    res = runner.invoke(app, ["eval", "m", str(tiny_data), "--png", str(png), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["count"] == 8 and sum(map(sum, out["confusion"])) == 8
    assert 0 <= out["top1"] <= 1 and out["top5"] == 1.0  # 2 classes: both are in the top 5
    assert png.read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(app, ["eval", "m", str(tiny_data)])
    assert res.exit_code == 0 and "top-1" in res.output and "confusion" in res.output
    res = runner.invoke(app, ["eval", "nope", str(tiny_data)])
    assert res.exit_code == 1 and "no model named 'nope'" in res.output
    res = runner.invoke(app, ["train", str(tiny_data), "--out", "n", "--init", "m",
                              "--arch", "resnet50"])  # fmt: skip
    assert res.exit_code == 1 and "is resnet18, but --arch is resnet50" in res.output
