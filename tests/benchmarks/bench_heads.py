"""Per-step time of the one head trainer (closed-form gradient + ``torch.optim.Adam``) against the grid's former
path (closed-form gradient + Adam written out by hand), measured interleaved in one process so that machine load
hits both alike. Prints the median per-step time of each and their ratio (> 1: the trainer is faster).

    .venv/bin/python tests/benchmarks/bench_heads.py [--dim 1280] [--classes 10] [--rounds 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from t2v_ray.core.heads import epoch_order, fit_softmax
from t2v_ray.core.settings import HeadConfig

_BETAS, _EPS = (0.9, 0.999), 1e-8


def written_out_adam(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: HeadConfig, gen: torch.Generator):
    """The grid's classifier before the trainers were merged (``train/classifier.fit_linear``): same draws,
    same gradient, Adam's update written out."""
    n = x.shape[0]
    xa = torch.cat([x.float(), torch.ones(n, 1)], dim=1)
    onehot = F.one_hot(y.long(), n_classes).float()
    w = torch.zeros(n_classes, xa.shape[1])
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    (b1, b2), t = _BETAS, 0
    for _ in range(cfg.epochs):
        order = epoch_order(y, cfg, gen)
        for s in range(0, order.numel(), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            rows = xa[idx]
            grad = torch.softmax(rows @ w.T, dim=1).sub_(onehot[idx]).T @ rows
            grad.div_(idx.numel()).add_(w, alpha=cfg.weight_decay)
            t += 1
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(_EPS)
            w.addcdiv_(m, denom, value=-cfg.lr / (1 - b1**t))
    return w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="cached feature rows")
    p.add_argument("--dim", type=int, default=1280, help="feature dimension (EfficientNet-Lite0: 1280)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dim, generator=g)
    y = torch.randint(0, args.classes, (args.n,), generator=g)
    cfg = HeadConfig(epochs=args.epochs, epoch_size=10_000, batch_size=64, lr=1e-4, weight_decay=5e-4)
    steps = cfg.epochs * -(-cfg.epoch_size // cfg.batch_size)
    runs = {
        "trainer (closed form + torch.optim.Adam)": lambda: fit_softmax(
            x, y, args.classes, cfg, torch.Generator().manual_seed(1)
        )[0],
        "former grid path (written-out Adam)": lambda: written_out_adam(
            x, y, args.classes, cfg, torch.Generator().manual_seed(1)
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    results = {k: fn() for k, fn in runs.items()}  # warm-up, and the two must agree
    a, b = results.values()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / steps)
    print(
        f"{args.n} rows x {args.dim} features, {args.classes} classes, {steps} steps, {args.threads} thread(s)"
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"  {name:<42} {1e6 * t:8.1f} us/step  (min {1e6 * min(times[name]):.1f})")
    new, old = med.values()
    print(f"  ratio former / trainer: {old / new:.2f} (>= 1: the trainer is at least as fast)")


if __name__ == "__main__":
    main()
