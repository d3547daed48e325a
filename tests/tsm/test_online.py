from __future__ import annotations

import pytest
import torch

from tests.tsm.conftest import make_model
from worker.tsm.online import OnlineRecognizer


@pytest.mark.parametrize(("arch", "size"), [("mobilenetv2", 64), ("resnet50", 32)])
def test_streaming_equals_causal_offline(arch: str, size: int) -> None:
    model, _ = make_model(arch, segments=5, online=True)
    clip = torch.randn(2, 5, 3, size, size)
    with torch.no_grad():
        offline = model.frame_logits(clip)
    online = OnlineRecognizer(model)
    state = online.init_state()
    frames = torch.stack([online.step(clip[:, t], state) for t in range(5)], dim=1)
    assert state.frames == 5
    assert (frames - offline).abs().max().item() <= 1e-5
    # The model itself is left in offline mode.
    with torch.no_grad():
        assert torch.equal(model.frame_logits(clip), offline)


def test_history_matters_and_offline_models_refused() -> None:
    model, _ = make_model("mobilenetv2", segments=2, online=True)
    online = OnlineRecognizer(model)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    fresh = online.step(b, online.init_state())
    state = online.init_state()
    online.step(a, state)
    assert not torch.allclose(online.step(b, state), fresh)
    offline, _ = make_model("mobilenetv2", segments=2)
    with pytest.raises(ValueError, match="causal"):
        OnlineRecognizer(offline)
