"""Probe-network registry: ``get_probe(name, weights=...)`` -> ``Probe`` (features, transform, filter map)."""

from __future__ import annotations

from t2v_ray.probes.base import FilterGroup, FilterMap, Probe
from t2v_ray.probes.registry import default_weights, get_probe, list_probes

__all__ = ["FilterGroup", "FilterMap", "Probe", "default_weights", "get_probe", "list_probes"]
