"""Fisher estimators against closed forms and slow references (paper §3, supplement §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from t2v_ray.core.fisher import montecarlo_fisher
from t2v_ray.probes.base import FilterMap
from tests.core.nets import tiny_cnn


def _two_layer(d_in: int = 4, d_hidden: int = 3, seed: int = 0):
    """Supplement §5 network: z = σ(Ux), p = σ(wᵀz); as a 2-way softmax with logits [0, wᵀz]."""
    torch.manual_seed(seed)
    feats = nn.Sequential(nn.Linear(d_in, d_hidden, bias=False), nn.Sigmoid())
    w = torch.randn(d_hidden) * 2
    head = nn.Linear(d_hidden, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.stack([torch.zeros(d_hidden), w]))
    return feats.double(), head.double(), w.double()


def _closed_form_diag(feats, w, x):
    """diag F_U[k, j] = mean_e p_e(1 − p_e) · w_k² z_k²(1 − z_k)² · x_j²   (supplement §5:
    F = E[p(1−p) S ⊗ xxᵀ] with S = wwᵀ ⊙ zzᵀ ⊙ (1−z)(1−z)ᵀ, whose diagonal blocks are S_kk · x_j²)."""
    with torch.no_grad():
        z = feats(x)
        p = torch.sigmoid(z @ w)
        s_kk = w**2 * z**2 * (1 - z) ** 2  # (N, d_hidden)
        return ((p * (1 - p))[:, None, None] * s_kk[:, :, None] * x[:, None, :] ** 2).mean(0)


def test_exact_expectation_matches_two_layer_closed_form():
    feats, head, w = _two_layer()
    x = torch.randn(50, 4, dtype=torch.float64)
    fm = FilterMap.from_module(feats)
    res = montecarlo_fisher(feats, head, fm, [x[:17], x[17:]], n_draws=0, per_weight=True)
    expected = _closed_form_diag(feats, w, x).numpy()
    np.testing.assert_allclose(res.per_weight[0], expected, atol=1e-5, rtol=1e-5)
    # Per-filter value = mean over the filter's weights (row k of U).
    np.testing.assert_allclose(res.per_filter, expected.mean(1), atol=1e-5, rtol=1e-5)


def test_montecarlo_converges_to_closed_form():
    feats, head, w = _two_layer(seed=1)
    x = torch.randn(200, 4, dtype=torch.float64)
    fm = FilterMap.from_module(feats)
    expected = _closed_form_diag(feats, w, x).numpy().mean(1)
    errs = []
    for draws in (1, 16, 256):
        runs = []
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            runs.append(montecarlo_fisher(feats, head, fm, [x], n_draws=draws, generator=g).per_filter)
        errs.append(np.mean([np.linalg.norm(r - expected) / np.linalg.norm(expected) for r in runs]))
    # Monte-Carlo error falls like 1/sqrt(draws): 16x more draws -> ~4x smaller error; allow slack.
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05


def _slow_reference(feats, head, fm, x):
    """One sample and one class at a time: Σ_c p_c (∂ log p_c / ∂W)², averaged over samples."""
    mods = [dict(feats.named_modules())[g.module] for g in fm.groups]
    acc = [torch.zeros_like(m.weight, dtype=torch.float64) for m in mods]
    for i in range(x.shape[0]):
        logp = torch.log_softmax(head(feats(x[i : i + 1])), -1)[0]
        for c in range(logp.shape[0]):
            grads = torch.autograd.grad(logp[c], [m.weight for m in mods], retain_graph=True)
            for a, g in zip(acc, grads, strict=True):
                a += logp[c].exp().detach().double() * g.double() ** 2
    per_weight = [a / x.shape[0] for a in acc]
    per_filter = np.concatenate([a.reshape(a.shape[0], -1).mean(1).numpy() for a in per_weight])
    return per_filter, per_weight


@pytest.mark.parametrize("per_weight", [True, False])  # False takes the Gram path where it is cheaper
def test_vectorized_equals_per_sample_loop(per_weight):
    feats = tiny_cnn()
    head = nn.Linear(12, 5)
    fm = FilterMap.from_module(feats)
    x = torch.randn(20, 3, 8, 8)
    ref_filter, ref_weight = _slow_reference(feats, head, fm, x)
    res = montecarlo_fisher(feats, head, fm, [x[:7], x[7:]], n_draws=0, per_weight=per_weight)
    scale = np.abs(ref_filter).max()
    np.testing.assert_allclose(res.per_filter / scale, ref_filter / scale, atol=1e-5)
    if per_weight:
        for got, ref in zip(res.per_weight, ref_weight, strict=True):
            np.testing.assert_allclose(got.reshape(ref.shape) / scale, ref.numpy() / scale, atol=1e-5)


def test_batch_size_invariance_and_probe_untouched():
    # The reference implementation squares a batch-mean gradient, so its estimate scales like 1/B;
    # ours averages per-sample squares, so batching cannot change it.
    feats = tiny_cnn()
    head = nn.Linear(12, 4)
    fm = FilterMap.from_module(feats)
    before = {k: v.clone() for k, v in feats.state_dict().items()}
    x = torch.randn(48, 3, 8, 8)
    a = montecarlo_fisher(feats, head, fm, [x[i : i + 4] for i in range(0, 48, 4)]).per_filter
    b = montecarlo_fisher(feats, head, fm, [x]).per_filter
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
    for k, v in feats.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert not feats.training


def test_sampled_labels_are_unbiased():
    # E over draws of the 1-draw estimate equals the exact expectation (draws come from p_w(y|x)).
    feats = tiny_cnn(1)
    head = nn.Linear(12, 3)
    fm = FilterMap.from_module(feats)
    x = torch.randn(16, 3, 8, 8)
    exact = montecarlo_fisher(feats, head, fm, [x], n_draws=0).per_filter
    g = torch.Generator().manual_seed(0)
    mc = montecarlo_fisher(feats, head, fm, [x], n_draws=400, generator=g).per_filter
    cos = exact @ mc / (np.linalg.norm(exact) * np.linalg.norm(mc))
    assert cos > 0.995
    assert np.linalg.norm(mc - exact) / np.linalg.norm(exact) < 0.1


@pytest.mark.parametrize("labels", ["true", "model"])
def test_variational_estimate_approaches_fisher_above_the_prior(labels):
    # Supplement §6: at the optimum (β/2N)Λ = F + (β/2N)λ², so embedding − prior ≈ F. On the §5 network with
    # labels drawn from the model itself the Hessian of the cross-entropy equals the Fisher in expectation.
    from t2v_ray.core.fisher import variational_fisher

    torch.set_num_threads(1)
    feats, head, w = _two_layer(d_in=4, d_hidden=6, seed=3)
    feats, head, w = feats.float(), head.float(), w.float()
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = torch.bernoulli(torch.sigmoid(feats(x) @ w), generator=torch.Generator().manual_seed(1)).long()
    fm = FilterMap.from_module(feats)
    exact = montecarlo_fisher(feats, head, fm, [x], n_draws=0).per_filter
    batches = [(x[i : i + 128], y[i : i + 128]) for i in range(0, 512, 128)]
    res = variational_fisher(
        feats,
        head,
        fm,
        batches,
        n_samples=512,
        epochs=300,
        lr_head=0.0,
        labels=labels,
        generator=torch.Generator().manual_seed(0),
    )
    est = res.per_filter - res.trivial
    assert np.corrcoef(exact, est)[0, 1] > 0.9
    assert np.linalg.norm(est - exact) / np.linalg.norm(exact) < 0.35


@pytest.mark.parametrize(
    ("channels", "mult", "kernel", "stride", "padding", "dilation"),
    [(6, 1, 3, 1, 1, 1), (6, 2, 3, 2, 1, 1), (4, 1, 5, 2, 2, 1), (4, 1, 3, 1, 2, 2)],
)
def test_depthwise_path_equals_per_sample_loop(channels, mult, kernel, stride, padding, dilation):
    # Depthwise convs (EfficientNet, MobileNet) take the shifted-view path instead of im2col.
    torch.manual_seed(0)
    feats = nn.Sequential(
        nn.Conv2d(3, channels, 1),
        nn.ReLU(),
        nn.Conv2d(channels, channels * mult, kernel, stride, padding, dilation, groups=channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()
    head = nn.Linear(channels * mult, 3)
    fm = FilterMap.from_module(feats)
    x = torch.randn(10, 3, 9, 9)
    ref_filter, ref_weight = _slow_reference(feats, head, fm, x)
    res = montecarlo_fisher(feats, head, fm, [x[:4], x[4:]], per_weight=True)
    scale = np.abs(ref_filter).max()
    np.testing.assert_allclose(res.per_filter / scale, ref_filter / scale, atol=1e-5)
    dw = ref_weight[1].numpy()
    np.testing.assert_allclose(res.per_weight[1].reshape(dw.shape) / scale, dw / scale, atol=1e-5)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "size"), [(3, 1, 1, 9), (3, 2, 1, 8), (5, 2, 2, 11), (5, 1, 2, 4)]
)
def test_grouped_conv_depthwise_path_equals_per_sample_loop(kernel, stride, padding, size):
    # Small output maps (2 to 256 pixels) without per-weight output take the grouped-conv path: G[b, c] = xcorr(x_pad[b, c],
    # δ[b, c]) dilated by the stride. Its per-filter sums must equal the per-sample autograd loop.
    from t2v_ray.core import fisher

    out = (size + 2 * padding - kernel) // stride + 1
    assert 1 < out * out <= fisher._DW_GROUPED_MAX_PIXELS
    torch.manual_seed(1)
    feats = nn.Sequential(
        nn.Conv2d(3, 5, 1),
        nn.ReLU(),
        nn.Conv2d(5, 5, kernel, stride, padding, groups=5),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()
    head = nn.Linear(5, 3)
    fm = FilterMap.from_module(feats)
    x = torch.randn(7, 3, size, size)
    ref_filter, _ = _slow_reference(feats, head, fm, x)
    res = montecarlo_fisher(feats, head, fm, [x[:3], x[3:]])
    scale = np.abs(ref_filter).max()
    np.testing.assert_allclose(res.per_filter / scale, ref_filter / scale, atol=1e-5)
