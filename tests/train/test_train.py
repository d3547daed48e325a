"""The training loop: learning, --resume, vcat's model format, --init, and bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vcat.cli import app
from worker.train.config import TrainConfig, TrainError
from worker.train.loop import lr_at, train
from worker.tsm.store import load_model


def test_a_few_steps_lower_the_loss(tiny_config: TrainConfig) -> None:
    config = dataclasses.replace(tiny_config, epochs=8)
    result = train(config)
    losses = result.step_losses
    assert len(losses) == 8  # 8 clips, full-batch steps
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_trained_model_round_trips_through_the_store(tiny_config: TrainConfig) -> None:
    result = train(tiny_config)
    assert result.model_dir == tiny_config.model_root / "tiny"  # type: ignore[operator]
    loaded, meta = load_model("tiny", root=tiny_config.model_root)
    assert meta.labels == ["moving something up", "something appearing"]
    assert (meta.arch, meta.num_segments, meta.input_size, meta.shift) == ("resnet18", 2, 32, True)
    assert meta.window_seconds == pytest.approx(2.5, abs=0.1)
    prov = meta.provenance
    assert prov["seed"] == 3 and prov["epochs"] == 1 and prov["data"] == str(tiny_config.data)
    assert prov["clips"] == {"train": 8, "val": 0, "skipped": 0}
    flips = {label: label for label in meta.labels}  # neither class has a mirrored partner
    assert prov["augment"] == {"flip": flips, "reverse": {}}
    x = torch.randn(2, 2, 3, 32, 32)
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model(x))


def test_resume_continues_where_it_stopped(tiny_config: TrainConfig) -> None:
    first = train(dataclasses.replace(tiny_config, epochs=1, val_fraction=0.25))
    assert first.start_epoch == 1 and len(first.history) == 1
    resumed = train(dataclasses.replace(tiny_config, epochs=2, val_fraction=0.25, resume=True))
    assert resumed.start_epoch == 2
    assert [r.epoch for r in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]
    assert resumed.history[1].steps == 2 * first.history[0].steps  # step count carried on
    assert len(resumed.step_losses) == first.history[0].steps  # only epoch 2 was run
    assert resumed.meta.provenance["epochs"] == 2
    with pytest.raises(TrainError, match="already has 2 epochs"):
        train(dataclasses.replace(tiny_config, epochs=2, val_fraction=0.25, resume=True))
    with pytest.raises(TrainError, match="num_segments"):
        train(
            dataclasses.replace(tiny_config, epochs=3, segments=3, val_fraction=0.25, resume=True)
        )


def test_resume_without_checkpoint(tiny_config: TrainConfig) -> None:
    with pytest.raises(TrainError, match="no checkpoint"):
        train(dataclasses.replace(tiny_config, resume=True))


def test_init_from_a_stored_model(tiny_config: TrainConfig, tiny_data: Path) -> None:
    train(dataclasses.replace(tiny_config, out="base"))
    base, _ = load_model("base", root=tiny_config.model_root)
    tuned = train(dataclasses.replace(tiny_config, out="tuned", init="base", max_steps=1))
    assert tuned.meta.provenance["init"] == "base"
    assert tuned.meta.arch == "resnet18"  # taken from the --init model
    with pytest.raises(TrainError, match="is resnet18, but --arch is mobilenetv2"):
        train(dataclasses.replace(tiny_config, out="x", init="base", arch="mobilenetv2"))
    with pytest.raises(TrainError, match="no-shift"):
        train(dataclasses.replace(tiny_config, out="x", init="base", shift=False))
    with pytest.raises(TrainError, match="--init nope"):
        train(dataclasses.replace(tiny_config, out="x", init="nope"))
    # Same weights before the (single) fine-tuning step moved them: conv1 changed a little only.
    w0 = base.state_dict()["backbone.conv1.weight"]
    w1 = tuned.model.state_dict()["backbone.conv1.weight"]
    assert (w1 - w0).abs().max() < 0.05 * w0.abs().max()


def test_lr_schedule() -> None:
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_tsn_baseline_has_no_shift(tiny_config: TrainConfig) -> None:
    result = train(dataclasses.replace(tiny_config, shift=False, max_steps=1))
    assert result.meta.shift is False
    assert not any(".net." in k for k in result.model.state_dict())


def test_cli_bad_input_is_one_line(tmp_path: Path, data_copy: Path) -> None:
    runner = CliRunner()
    (data_copy / "empty_class").mkdir()
    res = runner.invoke(app, ["train", str(data_copy), "--out", "m"])
    assert res.exit_code == 1
    assert "empty_class has no video files" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", str(tmp_path / "missing"), "--out", "m"])
    assert res.exit_code == 1 and "no such folder" in res.output
    res = runner.invoke(app, ["train", str(data_copy), "--out", "m", "--epochs", "0"])
    assert res.exit_code == 1 and "--epochs" in res.output
