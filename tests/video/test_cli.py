from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests import videos
from vcat.cli import app
from vcat.settings import get_settings
from worker.tsm.meta import ModelMeta


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.tsm.recognizer import build_model
    from worker.tsm.store import save_model

    root = tmp_path_factory.mktemp("models")
    meta = ModelMeta(
        name="tiny", arch="resnet18", num_segments=2, labels=["a", "b"], input_size=32,
        resize_short=40, window_seconds=1.0, stride_seconds=1.0,
    )  # fmt: skip
    torch.manual_seed(0)
    save_model(build_model(meta), meta, root)
    return root


@pytest.fixture
def cli_env(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("VCAT_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("VCAT_DEVICE", "cpu")
    monkeypatch.setenv("VCAT_PRECISION", "fp32")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_index_prints_segments_and_writes_stable_json(
    cli_env: None, cfr_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    args = ["index", str(cfr_video), "--model", "tiny", "--threshold", "0", "--json", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "label" in res.output and "start s" in res.output
    first = out.read_text()
    data = json.loads(first)
    assert data["errors"] == []
    (video,) = data["videos"]
    assert [c["start"] for c in video["clips"]] == [0.0, 1.0, 2.0]
    assert {s["label"] for s in video["segments"]} == {"a", "b"}
    assert CliRunner().invoke(app, args).exit_code == 0
    assert out.read_text() == first  # same file, same bytes


def test_bad_files_are_reported_and_the_rest_indexed(
    cli_env: None, cfr_video: Path, tmp_path: Path
) -> None:
    bad = videos.make_random_bytes(tmp_path / "junk.mp4")
    missing = tmp_path / "nope.mp4"
    res = CliRunner().invoke(
        app, ["index", str(bad), str(missing), str(cfr_video), "--model", "tiny", "--json", "-"]
    )
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert f"{bad}: not a video FFmpeg can read" in res.output
    assert f"{missing}: no such file" in res.output
    data = json.loads(res.stdout)  # with --json -, stdout is only the JSON
    assert [v["path"] for v in data["videos"]] == [str(cfr_video)]
    assert [e["reason"] for e in data["errors"]] == ["unreadable", "not_found"]


def test_unknown_model_and_bad_options_fail_in_one_line(cli_env: None, cfr_video: Path) -> None:
    res = CliRunner().invoke(app, ["index", str(cfr_video), "--model", "nosuch"])
    assert res.exit_code == 1 and "cannot load model 'nosuch'" in res.output
    assert "Traceback" not in res.output
    for flag, value in [("--window", "0"), ("--window", "nan"), ("--stride", "inf"),
                        ("--stride", "0.001")]:  # fmt: skip
        res = CliRunner().invoke(app, ["index", str(cfr_video), "--model", "tiny", flag, value])
        assert res.exit_code == 1, res.output
        assert res.output == f"error: {flag} must be between 0.01 and 600 seconds\n"


def test_only_bad_files_or_unknown_durations_still_end_cleanly(
    cli_env: None, tmp_path: Path
) -> None:
    """The progress bar once failed on a run with nothing to index, or no declared duration."""
    zero = videos.make_zero_byte(tmp_path / "zero.mp4")
    res = CliRunner().invoke(app, ["index", str(zero), "--model", "tiny"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)  # not a TypeError
    assert f"{zero}: file is empty" in res.output and "Traceback" not in res.output
    raw = videos.make_video(tmp_path / "raw.h264", width=64, height=48, duration=1.0,
                            container="h264")  # fmt: skip
    res = CliRunner().invoke(app, ["index", str(raw), "--model", "tiny"])
    assert res.exit_code == 0, res.output


def test_an_unwritable_json_path_fails_before_indexing(cli_env: None, cfr_video: Path) -> None:
    res = CliRunner().invoke(
        app, ["index", str(cfr_video), "--model", "tiny", "--json", "/nonexistent/out.json"]
    )
    assert res.exit_code == 1
    assert res.output == "error: cannot write /nonexistent/out.json: not a writable file path\n"


def test_the_bundled_demo_needs_no_model_store(
    tmp_path: Path, cfr_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VCAT_MODEL_DIR", str(tmp_path / "empty-store"))
    monkeypatch.setenv("VCAT_PRECISION", "fp32")
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["models", "list", "--json"])
        assert res.exit_code == 0, res.output
        assert [(m["name"], m["where"]) for m in json.loads(res.stdout)] == [("demo", "bundled")]
        res = CliRunner().invoke(app, ["index", str(cfr_video), "--model", "demo", "--json", "-"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["videos"][0]["model"] == "demo"
        res = CliRunner().invoke(app, ["models", "remove", "demo"])
        assert res.exit_code == 1 and "bundled with vcat and cannot be removed" in res.output
    finally:
        get_settings.cache_clear()
