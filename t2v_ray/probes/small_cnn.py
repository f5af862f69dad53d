"""A small, fast probe for tests and the CPU demo (~130k parameters at 32 px inputs)."""

from __future__ import annotations

import torch
from torch import nn

# (out_channels, stride) per conv stage; 3x3 kernels throughout. Four stages take 32 px to 4 px.
SMALL_CNN_STAGES: tuple[tuple[int, int], ...] = ((32, 1), (64, 2), (64, 2), (128, 2))


class SmallCNN(nn.Module):
    """conv-BN-ReLU stages, global average pool, linear classifier ``fc``.

    Args:
        num_classes: outputs of ``fc`` (the source head; replaced by the registry for features).
        stages: (out_channels, stride) of each 3x3 conv stage.
    """

    def __init__(self, num_classes: int = 10, stages: tuple[tuple[int, int], ...] = SMALL_CNN_STAGES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out, stride in stages:
            # ReLU out-of-place: the Fisher hooks read conv/BN outputs after the forward pass.
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.out_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.body(x)), 1))
