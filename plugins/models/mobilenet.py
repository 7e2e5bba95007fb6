"""MobileNetV2 (Sandler et al., 2018), the FedEM paper's CIFAR model, built here without importing torchvision.

The authors build it with ``torchvision.models.mobilenet_v2``. Importing torchvision costs a run 163 MB of
resident memory (it pulls in sympy, PIL and torch._dynamo through ``torchvision.ops``), which nothing else
on a run's path needs, so fedbench builds the same network itself: the same layers in the same order, with
the same parameter and buffer names (torchvision's ImageNet ``state_dict`` loads into it unchanged), the
same forward pass and the same initialisation, drawing from torch's generator in the same order, so that
under one seed both give bit-identical parameters (``tests/test_mobilenet.py`` checks it against
torchvision when torchvision is installed).

Layout (the paper's Table 2, expansion t, channels c, repeats n, first stride s): a 3 x 3 stride-2
convolution to 32 channels, 17 inverted-residual blocks, a 1 x 1 convolution to 1280 channels, global
average pooling, dropout 0.2 and a linear classifier. Each convolution but a block's last is followed by
BatchNorm and ReLU6; a block's last (the linear bottleneck) by BatchNorm only; a block adds its input when
its stride is 1 and its input and output widths agree.
"""

from __future__ import annotations

from torch import nn
import torch

#: (expansion t, output channels c, repeats n, first stride s) of the inverted-residual stages
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def round_channels(width: float, divisor: int = 8) -> int:
    """``width`` to the nearest multiple of ``divisor`` (at least ``divisor``), rounded up once more when
    that would lose over 10 % of it: the channel rule of the MobileNet papers' reference code."""
    rounded = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * width else rounded


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """Convolution (no bias, "same" padding), BatchNorm, and ReLU6 unless ``relu`` is False."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand by ``t`` (1 x 1, skipped when t = 1), depthwise 3 x 3 with ``stride``, project back (1 x 1,
    linear); the input is added when the shapes allow it."""

    def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = int(round(c_in * t))
        layers: list[nn.Module] = [conv_bn(c_in, hidden, kernel=1)] if t != 1 else []
        # the projection is a bare convolution and a BatchNorm at this level (the parameter names follow)
        layers += [conv_bn(hidden, hidden, stride=stride, groups=hidden), *conv_bn(hidden, c_out, kernel=1, relu=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for ``n_outputs`` classes at width multiplier ``width_mult`` on 3-channel images."""

    def __init__(self, n_outputs: int, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        c_in = round_channels(32 * width_mult)
        self.last_channel = round_channels(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn(3, c_in, stride=2)]
        for t, c, n, s in STAGES:
            c_out = round_channels(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        layers.append(conv_bn(c_in, self.last_channel, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, n_outputs))
        for m in self.modules():  # after every layer's own default initialisation, as the reference draws
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
