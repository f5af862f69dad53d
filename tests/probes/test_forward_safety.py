"""What the Fisher hooks rely on: each filter-map module runs once per forward, in map order, and
neither its input nor its output tensor is modified in place afterwards."""

from __future__ import annotations

import pytest
import torch

from tests.probes.test_registry import ALL


def _record(probe):
    named = dict(probe.features.named_modules())
    calls: list[str] = []
    records: dict[str, list] = {}
    handles = []
    for group in probe.filter_map.groups:

        def hook(mod, inputs, output, name=group.module):
            calls.append(name)
            x = inputs[0]
            records.setdefault(name, []).append(
                (x, x.clone(), x._version, output, output.clone(), output._version)
            )

        handles.append(named[group.module].register_forward_hook(hook))
    return calls, records, handles


@pytest.mark.parametrize("name", ALL)
def test_each_filter_module_called_once_in_map_order(name, probe32, images32):
    probe = probe32(name)
    calls, _, handles = _record(probe)
    try:
        with torch.no_grad():
            probe.features(images32)
    finally:
        for h in handles:
            h.remove()
    assert calls == [g.module for g in probe.filter_map.groups]


@pytest.mark.parametrize("name", ALL)
def test_hooked_tensors_not_mutated_and_differentiable(name, probe32, images32):
    probe = probe32(name)
    named = dict(probe.features.named_modules())
    _, records, handles = _record(probe)
    try:
        out = probe.features(images32)
    finally:
        for h in handles:
            h.remove()
    for module_name, [(x, x0, xv, y, y0, yv)] in records.items():
        assert x._version == xv and y._version == yv, f"{module_name}: in-place op after the hook"
        torch.testing.assert_close(x, x0, rtol=0, atol=0)
        torch.testing.assert_close(y, y0, rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(named[module_name](x0), y0)
    # The Fisher code differentiates w.r.t. every hooked output; autograd must accept all of them.
    outputs = [rec[0][3] for rec in records.values()]
    grads = torch.autograd.grad(out.pow(2).sum(), outputs)
    assert all(g.shape == y.shape for g, y in zip(grads, outputs, strict=True))
    assert all(p.grad is None for p in probe.features.parameters())
