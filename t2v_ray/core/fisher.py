"""Diagonal Fisher information of a probe's filters (paper §3, §3.1; supplement §5, §6).

Notation (paper): p_w(y|x) is the probe + head, F = E_{x~p̂, y~p_w(y|x)}[∇_w log p_w(y|x) ∇_w log p_w(y|x)ᵀ].
We keep only the diagonal, averaged over the weights of each filter (output channel / output unit).

Two estimators:
* ``montecarlo_fisher`` — exact *per-sample* squared gradients, never the square of a batch-mean
  gradient. Labels are either drawn from the model (``n_draws >= 1``) or integrated out exactly
  (``n_draws = 0``): at the logits the score is e_y − p, so Σ_y p_y (e_y − p)(e_y − p)ᵀ = diag(p) − ppᵀ
  = Σ_c v_c v_cᵀ with v_c = √p_c (e_c − p); back-propagating the C vectors v_c gives the exact
  expectation. Per-sample squared gradients per filter come from activation × output-gradient
  identities (BackPACK-style), so there is no Python loop over samples:
    linear  (a ∈ R^in, δ ∈ R^out):     Σ_i (δ_o a_i)² = δ_o² ‖a‖²
    conv    (U = im2col(x) ∈ R^{K×P}, δ ∈ R^{O×P}):  G = δ Uᵀ (the per-sample weight gradient),
            Σ_k G_ok² computed directly, or as δ_o (UᵀU) δ_oᵀ when the P×P Gram matrix is smaller.
* ``variational_fisher`` — the robust estimator of §3.1/§6: weights perturbed as N(ŵ, Λ⁻¹) with one
  precision Λ = exp(L) per filter (local reparameterisation), a per-layer prior N(0, λ⁻²I) with λ² learned,
  loss  CE + (β/2N)·KL  whose optimum satisfies (β/2N)Λ = F + (β/2N)λ²  (supplement §6); the embedding
  is (β/2N)Λ and a trivial task returns the prior (β/2N)λ² (the trivial embedding).

Both are pure functions: hooks are registered for the duration of the call and removed; the probe's
parameters and buffers are left bit-for-bit unchanged (eval mode, no optimizer touches them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Chunk per-sample work so no intermediate tensor exceeds this many elements (~256 MB in fp32).
_MAX_ELEMENTS = 64 * 2**20


@dataclass
class FisherResult:
    """Per-filter Fisher values and bookkeeping.

    Attributes:
        per_filter: (n_filters,) float64, concatenated over the filter map's groups.
        n_samples: number of images the estimate averages over.
        per_weight: optional list of per-weight diagonals (same shapes as the weights), when requested.
        trivial: for the variational estimator, the prior (β/2N)·λ² per filter (the trivial embedding).
        extra: estimator-specific diagnostics (final loss, learned log λ², ...).
    """

    per_filter: np.ndarray
    n_samples: int
    per_weight: list[np.ndarray] | None = None
    trivial: np.ndarray | None = None
    extra: dict | None = None


# --------------------------------------------------------------------------------------------- hooks
@contextmanager
def _capture(modules: list[nn.Module]) -> Iterator[list[dict]]:
    """Record each module's input and output on forward; removes the hooks on exit."""
    records: list[dict] = [{} for _ in modules]
    handles = []
    for rec, mod in zip(records, modules, strict=True):

        def hook(m, inputs, output, rec=rec):
            rec["input"] = inputs[0].detach()
            rec["output"] = output

        handles.append(mod.register_forward_hook(hook))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def _resolve(features: nn.Module, filter_map) -> list[nn.Module]:
    named = dict(features.named_modules())
    missing = [g.module for g in filter_map.groups if g.module not in named]
    if missing:
        raise KeyError(f"filter map names modules the feature extractor lacks: {missing[:5]}")
    return [named[g.module] for g in filter_map.groups]


# ----------------------------------------------------------------------------- per-sample squares
def _linear_sq(
    a: torch.Tensor, delta: torch.Tensor, per_weight: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-filter sums over the batch of squared per-sample weight gradients of a Linear layer."""
    if a.dim() == 2:  # no weight sharing: G_n = δ_n a_nᵀ, so Σ_i G_oi² = δ_o² ‖a‖²
        filt = (delta.pow(2) * a.pow(2).sum(1, keepdim=True)).sum(0)
        pw = torch.einsum("bo,bi->oi", delta.pow(2), a.pow(2)) if per_weight else None
        return filt, pw
    # Extra leading dims share the weight: G_n = Σ_t δ_nt a_ntᵀ.
    a3 = a.reshape(a.shape[0], -1, a.shape[-1])
    d3 = delta.reshape(delta.shape[0], -1, delta.shape[-1])
    g = torch.einsum("bto,bti->boi", d3, a3)
    return g.pow(2).sum((0, 2)), (g.pow(2).sum(0) if per_weight else None)


def _im2col(mod: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(B, C_in·k_h·k_w, P) patches, ordered like the conv weight's flattened (C_in, k_h, k_w) axes.

    Built from strided views (Tensor.unfold) plus one copy: on CPU this was 5-30x faster than
    F.unfold for the probe shapes we use (measured on torch 2.14, 2 threads).
    """
    if mod.dilation != (1, 1) or isinstance(mod.padding, str):
        return F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
    (kh, kw), (sh, sw), (ph, pw) = mod.kernel_size, mod.stride, mod.padding
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    patches = xp.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C, H', W', kh, kw), a view
    b, c, ho, wo = patches.shape[:4]
    return patches.permute(0, 1, 4, 5, 2, 3).reshape(b, c * kh * kw, ho * wo)


_DW_GROUPED_MAX_PIXELS = 16 * 16


def _depthwise_sq(
    mod: nn.Conv2d, x: torch.Tensor, delta: torch.Tensor, per_weight: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Depthwise conv (one input channel per group): G[b, o, (i, j)] = Σ_p δ[b, o, p] · x_pad[b, c(o), p + (i, j)].

    Large inputs: one shifted view of the input per kernel offset (k_h·k_w of them) times δ, summed over
    positions: no im2col and no tiny batched matmuls (those made depthwise layers half of EfficientNet's Fisher
    time). Outputs of 2 to :data:`_DW_GROUPED_MAX_PIXELS` pixels: G is itself a cross-correlation of x_pad with
    δ, one group per (sample, channel) and dilated by the stride, so one grouped ``conv2d`` computes it: 2-15x
    faster there (EfficientNet-Lite0 at 32-64 px, 1 thread), but slower on 32x32 maps and 10-70x slower on
    1x1 outputs (a 1x1 "kernel" dilated over a mostly padded input).
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = mod.kernel_size, mod.stride, mod.padding, mod.dilation
    b, c = x.shape[:2]
    ho, wo = delta.shape[2:]
    mult = mod.out_channels // c
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    grouped = mult == 1 and (dh, dw) == (1, 1) and not per_weight
    if grouped and 1 < ho * wo <= _DW_GROUPED_MAX_PIXELS:
        # out[g, i, j] = Σ_{p,q} xp[g, i + p·sh, j + q·sw] · δ[g, p, q]  (g = b·C + c): a conv with kernel δ and
        # dilation = stride, kept to (i, j) < k (valid when the layer's own dilation is 1).
        grad = F.conv2d(
            xp.reshape(1, b * c, *xp.shape[2:]),
            delta.reshape(b * c, 1, ho, wo),
            dilation=(sh, sw),
            groups=b * c,
        )[0, :, :kh, :kw].reshape(b, c, kh * kw)
        return grad.pow(2).sum((0, 2)), None
    d = delta.reshape(b, c, mult, ho, wo)
    cols = []
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw
            ]
            cols.append((d * patch[:, :, None]).sum((3, 4)).reshape(b, mod.out_channels))
    grad = torch.stack(cols, dim=-1)  # (B, O, k_h·k_w), the per-sample weight gradient
    sq = grad.pow(2)
    return sq.sum((0, 2)), (sq.sum(0) if per_weight else None)


def _conv_sq(
    mod: nn.Conv2d, x: torch.Tensor, delta: torch.Tensor, per_weight: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-filter sums over the batch of squared per-sample weight gradients of a Conv2d layer."""
    if mod.groups > 1 and mod.in_channels == mod.groups and not isinstance(mod.padding, str):
        return _depthwise_sq(mod, x, delta, per_weight)
    b, g = x.shape[0], mod.groups
    u = _im2col(mod, x)
    p = u.shape[-1]
    k = u.shape[1] // g
    o = mod.out_channels // g
    u = u.reshape(b, g, k, p)
    d = delta.reshape(b, g, o, p)
    direct_cost = o * k  # elements of the per-sample gradient
    gram_cost = p * p + o * p
    if per_weight or direct_cost <= gram_cost:
        grad = d @ u.transpose(-1, -2)  # (B, g, O/g, K): the per-sample weight gradient δ Uᵀ
        sq = grad.pow(2)
        filt = sq.sum((0, 3)).reshape(-1)
        pw = sq.sum(0).reshape(mod.out_channels, k) if per_weight else None
        return filt, pw
    gram = u.transpose(-1, -2) @ u  # (B, g, P, P) = UᵀU
    filt = ((d @ gram) * d).sum((0, 3)).reshape(-1)  # δ_o UᵀU δ_oᵀ = ‖δ_o Uᵀ‖²
    return filt, None


def _layer_sq(mod, x, delta, per_weight):
    if isinstance(mod, nn.Conv2d):
        return _conv_sq(mod, x, delta, per_weight)
    if isinstance(mod, nn.Linear):
        return _linear_sq(x, delta, per_weight)
    raise TypeError(f"filter map module {type(mod).__name__} is not Conv2d/Linear")


def _chunk_size(mod: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> int:
    per_sample = x[0].numel() + delta[0].numel()
    if isinstance(mod, nn.Conv2d):
        k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        p = delta[0, 0].numel()
        per_sample += k * mod.groups * p + min(
            mod.out_channels * k, mod.groups * p * p + mod.out_channels * p
        )
    return max(1, _MAX_ELEMENTS // max(per_sample, 1))


# ------------------------------------------------------------------------------- label vectors
def _score_vectors(logits: torch.Tensor, n_draws: int, max_classes: int | None, generator) -> torch.Tensor:
    """Backward vectors at the logits, shape (V, B, C), with Σ_v v vᵀ ≈ E_y[(e_y − p)(e_y − p)ᵀ].

    n_draws = 0: exact expectation, v_c = √p_c (e_c − p) for every class (or the max_classes most
    probable ones per sample, which drops only the low-probability terms).
    n_draws = D ≥ 1: y_d ~ p (the model's own predictive distribution, *not* the true labels),
    v_d = (e_{y_d} − p)/√D, an unbiased Monte-Carlo estimate.
    """
    p = logits.detach().float().softmax(-1)
    bsz, c = p.shape
    if n_draws == 0:
        kk = c if max_classes is None else min(c, max_classes)
        idx = (
            p.topk(kk, dim=-1).indices.T
            if kk < c
            else torch.arange(c, device=p.device)[:, None].expand(c, bsz)
        )
        onehot = F.one_hot(idx, c).to(p.dtype)  # (K, B, C)
        weight = p.gather(1, idx.T).T.sqrt()  # (K, B)
        return weight[..., None] * (onehot - p[None])
    ys = torch.multinomial(p, n_draws, replacement=True, generator=generator).T  # (D, B)
    return (F.one_hot(ys, c).to(p.dtype) - p[None]) / math.sqrt(n_draws)


# ----------------------------------------------------------------------------------- montecarlo
def montecarlo_fisher(
    features: nn.Module,
    head: nn.Module,
    filter_map,
    batches: Iterable[torch.Tensor],
    *,
    n_draws: int = 0,
    max_classes: int | None = None,
    per_weight: bool = False,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> FisherResult:
    """Diagonal Fisher of the feature extractor's filters with exact per-sample squared gradients.

    F_o = (1/N) Σ_n E_{y~p_w(y|x_n)} [ (1/K_o) Σ_{k∈filter o} (∂ log p_w(y|x_n)/∂w_k)² ]   (paper §3.1)

    Args:
        features: feature extractor (kept in eval mode; its parameters are not modified).
        head: classifier on the features, producing logits (trained beforehand on the task).
        filter_map: the probe's FilterMap (which modules count, weights per filter).
        batches: iterable of input tensors (B, ...), already on the right device.
        n_draws: 0 for the exact expectation over y, else labels sampled per image from the model.
        max_classes: with n_draws=0, keep only the most probable classes per sample (large C).
        per_weight: also return per-weight diagonals (forces the direct per-sample-gradient path).
        generator: RNG for the label draws.
        autocast_dtype: run the forward pass under autocast (e.g. torch.bfloat16 on GPU); the
            squared-gradient arithmetic is done in fp32.

    Returns:
        FisherResult with the per-filter vector (length filter_map.n_filters).
    """
    if n_draws < 0:
        raise ValueError("n_draws must be >= 0 (0 = exact expectation over labels)")
    was_training = features.training
    features.eval()
    head.eval()
    modules = _resolve(features, filter_map)
    acc = [None] * len(modules)
    acc_pw: list = [None] * len(modules)
    n = 0
    try:
        for x in batches:
            n += x.shape[0]
            _accumulate_batch(
                features,
                head,
                modules,
                x,
                acc,
                acc_pw,
                n_draws,
                max_classes,
                per_weight,
                generator,
                autocast_dtype,
            )
    finally:
        features.train(was_training)
    if n == 0:
        raise ValueError("no samples: the task has no images to compute the Fisher on")
    return _finish(filter_map, acc, acc_pw, n, per_weight)


def _accumulate_batch(
    features, head, modules, x, acc, acc_pw, n_draws, max_classes, per_weight, generator, autocast_dtype
):
    # A graph through the hooked outputs needs something upstream that requires grad; only when the probe's
    # parameters are frozen do we ask for it on the input (that costs one extra input-gradient).
    x = x.detach()
    if not any(m.weight.requires_grad for m in modules):
        x.requires_grad_(True)
    with _capture(modules) as recs, torch.enable_grad():
        if autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
                logits = head(features(x))
        else:
            logits = head(features(x))
    logits = logits.float()
    outputs = [r["output"] for r in recs]
    vectors = _score_vectors(logits, n_draws, max_classes, generator)
    for vi, v in enumerate(vectors):
        deltas = torch.autograd.grad(logits, outputs, grad_outputs=v, retain_graph=vi < len(vectors) - 1)
        for li, (mod, rec, delta) in enumerate(zip(modules, recs, deltas, strict=True)):
            xin, delta = rec["input"].float(), delta.float()
            step = _chunk_size(mod, xin, delta)
            for s in range(0, xin.shape[0], step):
                filt, pw = _layer_sq(mod, xin[s : s + step], delta[s : s + step], per_weight)
                acc[li] = filt if acc[li] is None else acc[li] + filt
                if per_weight:
                    acc_pw[li] = pw if acc_pw[li] is None else acc_pw[li] + pw


def _finish(filter_map, acc, acc_pw, n, per_weight) -> FisherResult:
    blocks = [
        (a.double().cpu().numpy() / n) / g.weights_per_filter
        for a, g in zip(acc, filter_map.groups, strict=True)
    ]
    pw = [(a.double().cpu().numpy() / n) for a in acc_pw] if per_weight else None
    return FisherResult(per_filter=np.concatenate(blocks), n_samples=n, per_weight=pw)


# ----------------------------------------------------------------------------------- variational
def _receptive_sq(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """s_o(x) = Σ_{k∈filter o} x_k² over each output position's receptive field, broadcast to the output shape.

    With a per-filter variance σ_o² the pre-activation noise of the local reparameterisation trick has
    variance σ_o² · s(x) (Kingma et al. 2015), because every weight of filter o shares σ_o².
    """
    if isinstance(mod, nn.Linear):
        return x.pow(2).sum(-1, keepdim=True)
    g = mod.groups
    b, c, h, w = x.shape
    xs = x.pow(2).reshape(b, g, c // g, h, w).sum(2)  # (B, g, H, W)
    ones = torch.ones(g, 1, *mod.kernel_size, device=x.device, dtype=x.dtype)
    s = F.conv2d(xs, ones, stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=g)
    return s.repeat_interleave(mod.out_channels // g, dim=1)


@contextmanager
def _perturb(modules: list[nn.Module], log_prec: list[torch.Tensor], generator) -> Iterator[None]:
    """Add local-reparameterisation noise N(0, σ_o² s(x)) with σ_o² = exp(−L_o) to each module's output."""
    handles = []
    for mod, lp in zip(modules, log_prec, strict=True):

        def hook(m, inputs, output, lp=lp):
            var = torch.exp(-lp)
            var = var.view(1, -1, 1, 1) if isinstance(m, nn.Conv2d) else var
            std = (var * _receptive_sq(m, inputs[0])).clamp_min(1e-20).sqrt()
            eps = torch.randn(output.shape, generator=generator, device=output.device, dtype=output.dtype)
            return output + std * eps

        handles.append(mod.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _kl_terms(weights: list[torch.Tensor], log_prec, log_prior, filter_map) -> torch.Tensor:
    """KL(N(ŵ, diag Λ⁻¹) ‖ N(0, λ⁻² I)) summed over layers, with Λ shared per filter.

    Per weight: ½[λ²Σ + λ²ŵ² − 1 − log λ² − log Σ]; with Σ = exp(−L_o) shared by the K weights of filter o.
    """
    total = 0.0
    for w, lp, lpr, g in zip(weights, log_prec, log_prior, filter_map.groups, strict=True):
        lam2 = torch.exp(lpr)
        k = g.weights_per_filter
        var_sum = k * torch.exp(-lp).sum()
        logvar_sum = -k * lp.sum()
        numel = g.n_filters * k
        total = total + 0.5 * (
            lam2 * var_sum + lam2 * w.detach().pow(2).sum() - numel - numel * lpr - logvar_sum
        )
    return total


def variational_fisher(
    features: nn.Module,
    head: nn.Module,
    filter_map,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    n_samples: int,
    beta: float = 1.0,
    epochs: int = 2,
    lr_precision: float = 1e-2,
    lr_head: float = 1e-4,
    lr_prior: float = 1e-2,
    labels: str = "true",
    generator: torch.Generator | None = None,
    init_precision: str = "prior",
    on_step: Callable[[int, float], None] | None = None,
) -> FisherResult:
    """Robust (variational) Fisher estimate (paper §3.1, supplement §4.2 and §6).

    Minimises  L(ŵ; Λ) = E_{w~N(ŵ,Λ⁻¹)}[CE] + (β/2N)·KL(N(ŵ,Λ⁻¹) ‖ N(0, λ⁻²I))  over L = log Λ (one per
    filter, lr 1e-2), log λ² (one per layer) and the head (lr 1e-4), with the probe's weights ŵ fixed.
    At the optimum (β/2N)Λ = F + (β/2N)λ² (second-order expansion, supplement §6), so the returned
    embedding is (β/2N)Λ; a task whose loss does not depend on the weights stays at the prior.

    Args:
        features, head, filter_map: as in ``montecarlo_fisher``; the head is copied and trained jointly.
        batches: re-iterable of (x, y) batches (one pass = one epoch).
        n_samples: N, the task's number of training samples (sets the prior's weight).
        beta: weight of the prior (β = 1 is the ELBO).
        labels: "true" uses the task labels (the paper's H_{p_w,p̂}); "model" samples y ~ p_w(y|x),
            whose expected Hessian is exactly the Fisher.
        init_precision: "prior" starts Λ at λ² (so an uninformative task does not move).

    Returns:
        FisherResult with per_filter = (β/2N)Λ and trivial = (β/2N)λ² per filter.
    """
    import copy

    modules = _resolve(features, filter_map)
    weights = [m.weight for m in modules]
    dev = weights[0].device
    # λ² starts at 1/mean(ŵ²) per layer: the prior matched to each layer's weight scale (supplement §6).
    log_prior = [
        torch.tensor(-math.log(w.detach().pow(2).mean().item() + 1e-12), device=dev).requires_grad_()
        for w in weights
    ]
    log_prec = [
        (lpr.detach().clone() * torch.ones(g.n_filters, device=dev)).requires_grad_()
        if init_precision == "prior"
        else torch.zeros(g.n_filters, device=dev, requires_grad=True)
        for lpr, g in zip(log_prior, filter_map.groups, strict=True)
    ]
    head = copy.deepcopy(head).train()
    opt = torch.optim.Adam(
        [
            {"params": log_prec, "lr": lr_precision},
            {"params": log_prior, "lr": lr_prior},
            {"params": list(head.parameters()), "lr": lr_head},
        ]
    )
    frozen = [(p, p.requires_grad) for p in features.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    was_training = features.training
    features.eval()
    scale = beta / (2.0 * n_samples)
    step, loss_val = 0, float("nan")
    try:
        for _ in range(epochs):
            for x, y in batches:
                if labels == "model":
                    # y ~ p_ŵ(y|x) from the *unperturbed* network: sampling from the perturbed one would make
                    # E_y[∇ log p(y)] = 0 and leave Λ at the prior.
                    with torch.no_grad():
                        clean = head(features(x)).softmax(-1)
                    y = torch.multinomial(clean, 1, generator=generator).squeeze(1)
                with _perturb(modules, log_prec, generator):
                    logits = head(features(x))
                ce = F.cross_entropy(logits, y)
                loss = ce + scale * _kl_terms(weights, log_prec, log_prior, filter_map)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_val = float(loss.detach())
                if on_step is not None:
                    on_step(step, loss_val)
    finally:
        for p, rg in frozen:
            p.requires_grad_(rg)
        features.train(was_training)
    emb = np.concatenate([scale * torch.exp(lp).detach().double().cpu().numpy() for lp in log_prec])
    triv = np.concatenate(
        [
            np.full(g.n_filters, scale * math.exp(float(lpr.detach())))
            for lpr, g in zip(log_prior, filter_map.groups, strict=True)
        ]
    )
    extra = {"final_loss": loss_val, "steps": step, "log_prior": [float(v.detach()) for v in log_prior]}
    return FisherResult(per_filter=emb, n_samples=n_samples, trivial=triv, extra=extra)


def prior_embedding(features: nn.Module, filter_map, n_samples: int, beta: float = 1.0) -> np.ndarray:
    """The trivial embedding t0 = (β/2N)·λ² per filter with λ² = 1/mean(ŵ²) of each layer.

    It is what the variational estimator returns for a task that carries no information, so it is the
    reference point of the asymmetric distance for either estimator (paper §3.1, §3.3).
    """
    modules = _resolve(features, filter_map)
    scale = beta / (2.0 * n_samples)
    return np.concatenate(
        [
            np.full(g.n_filters, scale / (m.weight.detach().double().pow(2).mean().item() + 1e-12))
            for m, g in zip(modules, filter_map.groups, strict=True)
        ]
    )
