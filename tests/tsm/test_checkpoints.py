"""Each external layout, written here key by key from its published form, loads strictly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor

from tests.tsm.conftest import make_model
from worker.tsm.checkpoints import (
    CheckpointError,
    import_external,
    load_vcat,
    parse_authors_filename,
    read_state_dict,
    save_vcat,
)

R50_NAME = "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth"


def authors_layout(state: dict[str, Tensor], head: str = "module.new_fc.") -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            out[head + k.removeprefix("head.")] = v
        else:
            out["module.base_model." + k.removeprefix("backbone.")] = v
    return out


def mmaction_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            out["cls_head.fc_cls." + k.removeprefix("head.")] = v
            continue
        k = k.removeprefix("backbone.")
        k = re.sub(r"(^|\.)conv(\d)\.", r"\1conv\2.conv.", k)
        k = re.sub(r"(^|\.)bn(\d)\.", r"\1conv\2.bn.", k)
        k = k.replace("downsample.0.", "downsample.conv.").replace(
            "downsample.1.", "downsample.bn."
        )
        out["backbone." + k] = v
    return out


def online_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        k = k.removeprefix("backbone.").replace(".net.", ".").replace("head.", "classifier.")
        out[k] = v
    return out


def authors_file(tmp: Path, state: dict[str, Tensor], name: str = R50_NAME) -> Path:
    path = tmp / name
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": state, "best_prec1": 71.2}, path)
    return path


def assert_same_logits(
    a: torch.nn.Module, b: torch.nn.Module, segments: int, size: int = 32
) -> None:
    x = torch.randn(2, segments, 3, size, size)
    with torch.no_grad():
        assert (a(x) - b(x)).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def r50() -> tuple[torch.nn.Module, object]:
    return make_model("resnet50", segments=8, classes=5)


def test_authors_format_loads_and_matches(r50, tmp_path: Path) -> None:
    model, meta = r50
    state = authors_layout(model.state_dict())
    assert "module.base_model.layer1.0.conv1.net.weight" in state
    labels = list(meta.labels)
    imported, imeta = import_external(authors_file(tmp_path, state), labels, "k400")
    assert (imeta.arch, imeta.num_segments, imeta.shift, imeta.shift_div) == (
        "resnet50",
        8,
        True,
        8,
    )
    assert_same_logits(model, imported, 8)
    save_vcat(imported, imeta, tmp_path / "vcat")
    again, _ = load_vcat(tmp_path / "vcat")
    assert_same_logits(model, again, 8)


def test_authors_head_in_base_model_and_no_batch_counters(tmp_path: Path) -> None:
    model, meta = make_model("mobilenetv2", segments=4)
    state = authors_layout(model.state_dict(), head="module.base_model.classifier.")
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    name = "TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment8_e100_dense.pth"
    imported, imeta = import_external(authors_file(tmp_path, state, name), meta.labels, "m", 4)
    assert imeta.arch == "mobilenetv2" and imeta.num_segments == 4
    assert_same_logits(model, imported, 4, 64)


def test_mmaction2_format_loads_and_matches(r50, tmp_path: Path) -> None:
    model, meta = r50
    state = mmaction_layout(model.state_dict())
    assert "backbone.layer1.0.conv1.conv.net.weight" in state
    assert (
        "backbone.conv1.bn.running_var" in state
        and "backbone.layer1.0.downsample.bn.weight" in state
    )
    path = tmp_path / "tsm_r50_1x1x8_kinetics400_20220831-64d69186.pth"
    torch.save({"meta": {"epoch": 50}, "state_dict": state}, path)
    imported, imeta = import_external(path, meta.labels, "mm", 8)
    assert imeta.provenance["format"] == "mmaction2"
    assert_same_logits(model, imported, 8)


def test_online_demo_format(tmp_path: Path) -> None:
    model, meta = make_model("mobilenetv2", segments=4, online=True)
    state = online_layout(model.state_dict())
    assert "features.3.conv.0.weight" in state and "classifier.weight" in state
    path = tmp_path / "mobilenetv2_jester_online.pth.tar"
    torch.save(state, path)
    imported, imeta = import_external(path, meta.labels, "jester", 4)
    assert imeta.online and imeta.arch == "mobilenetv2"
    x = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        assert (model.frame_logits(x) - imported.frame_logits(x)).abs().max() <= 1e-5


def test_name_must_agree_with_tensors(tmp_path: Path) -> None:
    model, meta = make_model("resnet18", segments=2)
    state = authors_layout(model.state_dict())
    with pytest.raises(CheckpointError, match="name says resnet50"):
        import_external(authors_file(tmp_path, state), meta.labels, "x")
    tsn_name = "TSM_kinetics_RGB_resnet18_avg_segment5_e50.pth"
    with pytest.raises(CheckpointError, match="shift=False"):
        import_external(authors_file(tmp_path, state, tsn_name), meta.labels, "x")


def test_wrong_files_give_clear_errors(r50, tmp_path: Path) -> None:
    model, meta = r50
    state = authors_layout(model.state_dict())
    broken = dict(state)
    del broken["module.base_model.layer2.1.bn2.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.layer2\.1\.bn2\.weight"):
        import_external(authors_file(tmp_path, broken), meta.labels, "x")
    extra = dict(state, **{"module.base_model.layer1.0.extra.weight": torch.zeros(1)})
    with pytest.raises(
        CheckpointError, match=r"unexpected keys: backbone\.layer1\.0\.extra\.weight"
    ):
        import_external(authors_file(tmp_path, extra), meta.labels, "x")
    shaped = dict(state, **{"module.base_model.conv1.weight": torch.zeros(64, 3, 3, 3)})
    with pytest.raises(CheckpointError, match=r"mis-shaped: backbone\.conv1\.weight"):
        import_external(authors_file(tmp_path, shaped), meta.labels, "x")
    with pytest.raises(CheckpointError, match="5 classes, label file has 400"):
        import_external(authors_file(tmp_path, state), [f"l{i}" for i in range(400)], "x")
    good = authors_file(tmp_path, state)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(truncated)


class NotAStateDict:
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_non_state_dict_pickles_are_refused(tmp_path: Path) -> None:
    obj_file = tmp_path / "object.pth"
    torch.save(NotAStateDict(), obj_file)
    with pytest.raises(CheckpointError, match="unsafe pickle"):
        read_state_dict(obj_file)
    list_file = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], list_file)
    with pytest.raises(CheckpointError, match="does not contain a state dict"):
        read_state_dict(list_file)
    mixed = tmp_path / "mixed.pth"
    torch.save({"state_dict": {"a": torch.zeros(1), "b": 3}}, mixed)
    with pytest.raises(CheckpointError, match="non-tensor entries: b"):
        read_state_dict(mixed)


def test_parse_authors_filename() -> None:
    p = parse_authors_filename(
        "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e100_dense.pth"
    )
    assert (p.arch, p.shift, p.num_segments, p.dense) == ("resnet50", True, 8, True)
    tsn = parse_authors_filename("TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth")
    assert not tsn.shift and tsn.num_segments == 5
    with pytest.raises(CheckpointError, match="only RGB"):
        parse_authors_filename("TSM_something_Flow_resnet50_shift8_blockres_avg_segment8_e45.pth")
