"""Probes at 32 px, built once per session: VGG-13 alone takes ~2 s to initialise on this CPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from t2v_ray.probes import Probe, get_probe


@pytest.fixture(scope="session")
def probe32() -> Callable[[str], Probe]:
    """``probe32(name)`` -> a random-init probe with 32 px inputs, cached per name (read-only for tests)."""
    cache: dict[str, Probe] = {}

    def get(name: str) -> Probe:
        if name not in cache:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                cache[name] = get_probe(name, input_size=32)
        return cache[name]

    return get


@pytest.fixture
def images32() -> torch.Tensor:
    """Two seeded 32 px images, roughly normalised."""
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
