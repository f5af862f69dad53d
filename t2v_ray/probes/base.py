"""Probe-network contract: feature extractor, head size, input transform and filter map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class FilterGroup:
    """One parameterised module of the feature extractor whose weights are grouped into filters.

    The filters of a conv layer are its output channels, of a linear layer its output units: the
    weight tensor's axis 0. ``n_filters`` is that axis' length and ``weights_per_filter`` the
    number of weights averaged into each filter's Fisher entry (conv: C_in/groups·k_h·k_w,
    linear: in_features).
    """

    module: str
    kind: str  # "conv" | "linear"
    n_filters: int
    weights_per_filter: int


@dataclass(frozen=True)
class FilterMap:
    """Which modules count for the embedding, in forward order; the embedding concatenates them."""

    groups: tuple[FilterGroup, ...]

    @property
    def n_filters(self) -> int:
        return sum(g.n_filters for g in self.groups)

    @property
    def layer_offsets(self) -> list[int]:
        """Start index of each group in the embedding vector, plus the total at the end."""
        out, acc = [], 0
        for g in self.groups:
            out.append(acc)
            acc += g.n_filters
        out.append(acc)
        return out

    @classmethod
    def from_module(
        cls, features: nn.Module, include: Callable[[str, nn.Module], bool] | None = None
    ) -> FilterMap:
        """Default map: every Conv2d and Linear of ``features`` (BatchNorm and friends excluded)."""
        groups = []
        for name, mod in features.named_modules():
            if include is not None and not include(name, mod):
                continue
            if isinstance(mod, nn.Conv2d):
                k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                groups.append(FilterGroup(name, "conv", mod.out_channels, k))
            elif isinstance(mod, nn.Linear):
                groups.append(FilterGroup(name, "linear", mod.out_features, mod.in_features))
        if not groups:
            raise ValueError("filter map is empty: the feature extractor has no Conv2d/Linear modules")
        return cls(tuple(groups))


@dataclass
class Probe:
    """A pre-trained network split into feature extractor and (optional) source head.

    Attributes:
        name: registry name, e.g. ``resnet34``.
        features: module mapping a batch of images (B, 3, H, W) to features (B, D).
        feature_dim: D.
        input_size: side in pixels that ``transform`` produces.
        transform: PIL image -> float tensor (3, input_size, input_size), normalised for this probe.
        filter_map: which modules of ``features`` count for the embedding.
        source_head: the pre-trained classifier on top of ``features`` (ImageNet), if any; used by
            LEEP/NCE and for sanity checks. Never trained by Task2Vec.
        weights: description of the weights loaded ("none", a torchvision name, a path/URI, ...).
        meta: free-form facts (parameter count, source classes, ...).
    """

    name: str
    features: nn.Module
    feature_dim: int
    input_size: int
    transform: Callable
    filter_map: FilterMap
    source_head: nn.Module | None = None
    weights: str = "none"
    meta: dict = field(default_factory=dict)

    def state_hash(self) -> str:
        """Stable content hash of the probe's architecture name and feature-extractor weights."""
        import hashlib

        h = hashlib.sha256(self.name.encode())
        for k, v in sorted(self.features.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def to(self, device: torch.device | str) -> Probe:
        self.features.to(device)
        if self.source_head is not None:
            self.source_head.to(device)
        return self
