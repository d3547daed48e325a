"""MobileNetV2 (width 1.0) backbone in the TSM authors' layout, without the classifier.

Parameter names follow the authors' (and the original pytorch-mobilenet-v2) flat layout that
their checkpoints use: ``features.0.0`` stem conv, ``features.N.conv.{0..7}`` inside inverted
residual blocks, ``features.18.0`` final 1x1 conv. Torchvision's later MobileNetV2 nests these
(``features.N.conv.0.0``); the authors' names are the ones needed to load TSM checkpoints.
"""

from __future__ import annotations

from torch import Tensor, nn

# (expansion t, channels c, repeats n, first stride s)
_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip


def _conv_bn_relu(
    cin: int, cout: int, kernel: int, stride: int, groups: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    ]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += _conv_bn_relu(cin, hidden, 1, 1)
        layers += _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        features: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(3, 32, 3, 2))]
        cin = 32
        for t, c, n, s in _SETTING:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(nn.Sequential(*_conv_bn_relu(cin, 1280, 1, 1)))
        self.features = nn.Sequential(*features)
        self.feature_dim = 1280
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean((2, 3))


def mobilenet_v2() -> MobileNetV2:
    """A randomly initialised MobileNetV2 backbone (1280-d features)."""
    return MobileNetV2()
