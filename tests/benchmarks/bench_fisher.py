"""Fisher-embedding speed: ratios measured in one run on the same samples (not a timed test).

Prints, per probe: (a) one Monte-Carlo Fisher pass (n_draws=1) / one plain forward+backward pass of the
probe over the same samples (target <= 1.5); (b) speed-up over a naive loop that back-propagates one
sample at a time and squares the parameter gradients (target >= 5x); (c) the exact expectation over 10
classes for reference; (d) peak memory (RSS on CPU, allocator peak on GPU). Each configuration runs in a
fresh subprocess so peaks do not mix.

Usage: python tests/benchmarks/bench_fisher.py [--gpu] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CPU_CASES = [("small_cnn", 32, 256), ("resnet18", 32, 256), ("efficientnet_lite0", 64, 128)]
GPU_CASES = [("resnet34", 224, 512, False), ("resnet34", 224, 512, True)]


def _time(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run_case(name: str, size: int, n: int, device: str, amp: bool, naive_n: int) -> dict:
    import resource

    import torch
    import torch.nn.functional as F

    from t2v_ray.core.fisher import montecarlo_fisher
    from t2v_ray.probes import get_probe

    torch.manual_seed(0)
    if device == "cpu":
        torch.set_num_threads(int(_arg("threads", "2")))
    weights = "imagenet" if name == "efficientnet_lite0" else None
    probe = get_probe(name, weights=weights, input_size=size).to(device)
    feats = probe.features.eval()
    head = torch.nn.Linear(probe.feature_dim, 10).to(device)
    x = torch.randn(n, 3, size, size, device=device)
    bs = 64
    batches = [x[i : i + bs] for i in range(0, n, bs)]
    params = [p for p in feats.parameters() if p.requires_grad]
    dtype = torch.bfloat16 if amp else None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fwd_bwd():
        for b in batches:
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
                logits = head(feats(b))
            y = torch.multinomial(logits.detach().float().softmax(-1), 1).squeeze(1)
            grads = torch.autograd.grad(F.cross_entropy(logits.float(), y), params)
            del grads
        sync()

    def mc(draws):
        def run():
            montecarlo_fisher(feats, head, probe.filter_map, batches, n_draws=draws, autocast_dtype=dtype)
            sync()

        return run

    def naive():
        acc = [torch.zeros_like(p) for p in params]
        for i in range(naive_n):
            logits = head(feats(x[i : i + 1]))
            y = torch.multinomial(logits.detach().softmax(-1), 1).squeeze(1)
            for a, g in zip(acc, torch.autograd.grad(F.cross_entropy(logits, y), params), strict=True):
                a += g * g
        sync()

    fwd_bwd()  # warm-up (allocator, cudnn autotune)
    t_fb = _time(fwd_bwd)
    t_mc1 = _time(mc(1))
    t_exact = _time(mc(0), repeat=1)
    t_naive = _time(naive, repeat=1) * n / naive_n
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "probe": name,
        "px": size,
        "n": n,
        "device": device + (" bf16" if amp else " fp32"),
        "fwd_bwd_s": t_fb,
        "mc1_s": t_mc1,
        "exact10_s": t_exact,
        "naive_s": t_naive,
        "mc1_over_fwdbwd": t_mc1 / t_fb,
        "speedup_vs_naive": t_naive / t_mc1,
        "peak_mb": peak,
        "filters": probe.filter_map.n_filters,
    }


def _arg(key: str, default: str) -> str:
    for a in sys.argv:
        if a.startswith(f"--{key}="):
            return a.split("=", 1)[1]
    return default


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpu", action="store_true", help="run the GPU cases (resnet34 224 px fp32 and bf16)")
    ap.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # child process: one configuration
        name, size, n, device, amp, naive_n = json.loads(args.case)
        print(json.dumps(run_case(name, size, n, device, amp, naive_n)))
        return 0
    cases = [(c[0], c[1], c[2] // (4 if args.quick else 1), "cpu", False, 16) for c in CPU_CASES]
    if args.gpu:
        cases = [(c[0], c[1], c[2], "cuda", c[3], 64) for c in GPU_CASES] + cases[:1]
    rows = []
    for case in cases:
        out = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(case), f"--threads={args.threads}"],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"{case[0]} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{r['probe']:<20}{r['px']:>4}px n={r['n']:<4} {r['device']:<10} fwd+bwd {r['fwd_bwd_s']:.3f}s  "
            f"MC(1 draw) {r['mc1_s']:.3f}s  exact(10 cls) {r['exact10_s']:.3f}s  naive {r['naive_s']:.2f}s  "
            f"ratio {r['mc1_over_fwdbwd']:.2f} (target <= 1.5)  speed-up {r['speedup_vs_naive']:.1f}x (target >= 5)  "
            f"peak {r['peak_mb']:.0f} MB",
            flush=True,
        )
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
