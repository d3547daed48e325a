"""Each external layout, written here key by key from its published form, loads strictly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor

from tests.tsm.conftest import make_model
from worker.tsm.checkpoints import (
    META_FILE,
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
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint of plain tensors") as e:
        read_state_dict(obj_file)
    assert "weights_only" not in str(e.value)  # torch's advice to unpickle anything: not ours
    html = tmp_path / "error-page.pth"
    html.write_bytes(b"<html><body>404 Not Found</body></html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(html)
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


def test_mmaction2_frames_come_from_the_file_name(tmp_path: Path) -> None:
    model, meta = make_model("resnet18", segments=16)
    state = mmaction_layout(model.state_dict())
    path = tmp_path / "tsm_imagenet-pretrained-r18_8xb16-1x1x16-50e_kinetics400-rgb_2022-1a2b.pth"
    torch.save({"state_dict": state}, path)
    imported, imeta = import_external(path, meta.labels, "mm16")
    assert imeta.num_segments == 16
    assert_same_logits(model, imported, 16)
    anonymous = tmp_path / "model.pth"
    torch.save({"state_dict": state}, anonymous)
    with pytest.raises(CheckpointError, match="pass it"):  # T unknown: never a silent 8
        import_external(anonymous, meta.labels, "mm")
    assert import_external(anonymous, meta.labels, "mm", 16)[1].num_segments == 16


def test_label_map_must_fit_the_checkpoint(tmp_path: Path) -> None:
    online, ometa = make_model("mobilenetv2", segments=4, online=True, classes=27)
    demo = tmp_path / "mobilenetv2_jester_online.pth.tar"
    torch.save(online_layout(online.state_dict()), demo)
    # mmaction2's Jester map has the same 27 classes in another order: never silently
    with pytest.raises(CheckpointError, match="own class order"):
        import_external(demo, ometa.labels, "j", label_map="jester")
    assert import_external(demo, ometa.labels, "j")[1].online  # a label file is taken

    r18, meta = make_model("resnet18", segments=8, classes=174)
    v1 = tmp_path / "TSM_something_RGB_resnet18_shift8_blockres_avg_segment8_e45.pth"
    torch.save({"state_dict": authors_layout(r18.state_dict())}, v1)
    with pytest.raises(CheckpointError, match="'somethingv2' label map"):
        import_external(v1, meta.labels, "v1", label_map="somethingv2")
    v2 = tmp_path / v1.name.replace("something", "somethingv2")
    v1.rename(v2)
    assert import_external(v2, meta.labels, "v2", label_map="somethingv2")[1].num_classes == 174

    mm = tmp_path / "tsm_r18_1x1x8_50e_sthv2_rgb_20220831-64d69186.pth"
    torch.save({"state_dict": mmaction_layout(r18.state_dict())}, mm)
    with pytest.raises(CheckpointError, match="mmaction2 somethingv2"):
        import_external(mm, meta.labels, "mm", label_map="kinetics400")


def test_mmaction2_mobilenetv2_is_refused_by_name(tmp_path: Path) -> None:
    state = {"backbone.conv1.conv.weight": torch.zeros(32, 3, 3, 3),
             "backbone.layer1.0.conv.0.conv.weight": torch.zeros(32, 1, 3, 3),
             "cls_head.fc_cls.weight": torch.zeros(5, 1280)}  # fmt: skip
    path = tmp_path / "tsm_mobilenetv2_1x1x8_kinetics400.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="MobileNetV2-TSM checkpoints are not supported"):
        import_external(path, [f"c{i}" for i in range(5)], "m")


def test_invalid_metadata_is_a_checkpoint_error(tmp_path: Path) -> None:
    model, meta = make_model("resnet18", segments=2)
    save_vcat(model, meta, tmp_path / "m")
    data = json.loads((tmp_path / "m" / META_FILE).read_text())
    data["shift_place"] = "blocks"
    (tmp_path / "m" / META_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="invalid model metadata"):
        load_vcat(tmp_path / "m")
