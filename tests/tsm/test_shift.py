from __future__ import annotations

import pytest
import torch

from worker.tsm.meta import ModelMeta
from worker.tsm.recognizer import build_model
from worker.tsm.shift import TemporalShift, resnet_shift_targets, temporal_shift


def reference_shift(x: torch.Tensor, t: int, div: int, causal: bool) -> torch.Tensor:
    """Element by element from the paper: out[f, c] = x[f+1, c] / x[f-1, c] / x[f, c]."""
    nt, c = x.shape[:2]
    fold = c // div
    out = torch.zeros_like(x)
    for clip in range(nt // t):
        for f in range(t):
            i = clip * t + f
            for ch in range(c):
                if causal:
                    src = f - 1 if ch < fold else f
                elif ch < fold:
                    src = f + 1
                elif ch < 2 * fold:
                    src = f - 1
                else:
                    src = f
                if 0 <= src < t:
                    out[i, ch] = x[clip * t + src, ch]
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("c", "t", "div"), [(8, 3, 8), (16, 8, 8), (12, 4, 4), (10, 5, 3), (64, 2, 8)]
)
def test_shift_matches_paper_definition(c: int, t: int, div: int, causal: bool) -> None:
    x = torch.randn(2 * t, c, 3, 2)
    got = temporal_shift(x, t, div, "causal" if causal else "bidirectional")
    assert torch.equal(got, reference_shift(x, t, div, causal))


def test_shift_single_frame_and_bad_input() -> None:
    x = torch.randn(3, 16, 2, 2)
    expected = x.clone()
    expected[:, :4] = 0  # one frame: both shifted folds are padding
    assert torch.equal(temporal_shift(x, 1), expected)
    with pytest.raises(ValueError, match="multiple"):
        temporal_shift(torch.randn(5, 8, 2, 2), 4)


def test_wrapper_keeps_authors_names() -> None:
    shift = TemporalShift(torch.nn.Conv2d(8, 4, 1), num_segments=2)
    assert set(shift.state_dict()) == {"net.weight", "net.bias"}


def test_resnet101_every_other_block() -> None:
    assert resnet_shift_targets([3, 4, 6, 3]) == [
        (s, b) for s, n in enumerate([3, 4, 6, 3]) for b in range(n)
    ]
    r101 = resnet_shift_targets([3, 4, 23, 3])
    assert (2, 22) in r101 and (2, 21) not in r101 and (0, 1) not in r101
    keys = build_model(ModelMeta("t", "resnet101", 2, ["a"])).state_dict()
    assert "backbone.layer3.0.conv1.net.weight" in keys
    assert "backbone.layer3.1.conv1.weight" in keys


def test_block_placement_and_tsn_keys() -> None:
    block = build_model(ModelMeta("t", "resnet18", 2, ["a"], shift_place="block")).state_dict()
    assert "backbone.layer2.1.net.conv1.weight" in block
    tsn = build_model(ModelMeta("t", "resnet18", 2, ["a"], shift=False)).state_dict()
    assert not any(".net." in k for k in tsn)
    mb = build_model(ModelMeta("t", "mobilenetv2", 2, ["a"])).state_dict()
    shifted = sorted(int(k.split(".")[2]) for k in mb if k.endswith("conv.0.net.weight"))
    assert shifted == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


def test_shift_changes_temporal_behaviour() -> None:
    """TSM sees frame order, TSN does not: reversing time changes TSM logits only."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, 32, 32)
    for shift in (True, False):
        m = build_model(ModelMeta("t", "resnet18", 4, ["a", "b"], shift=shift)).eval()
        with torch.no_grad():
            same = torch.allclose(m(x), m(x.flip(1)), atol=1e-6)
        assert same != shift
