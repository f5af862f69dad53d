"""Embedding stability: how far two seeds of the same task land, against the spread between tasks.

    .venv/bin/python tests/benchmarks/bench_stability.py --library URI [--max-samples 256 10000] [--tasks N]

For each ``max_samples`` setting, every task is embedded twice with the demo's estimator (EfficientNet-Lite0 at
64 px, exact Fisher over the 3 most probable classes, 2 head epochs), seeds 0 and 1, in this process with one
torch thread. Prints per task d_sym(seed 0, seed 1) and its ratio to the median between-task d_sym (seed 0);
issue 13's target is a ratio <= 0.10 for every task. Seeds change which images are subsampled (when a task has
more than ``max_samples``) and the head's balanced draws.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", required=True)
    p.add_argument("--max-samples", type=int, nargs="+", default=[256, 10_000])
    p.add_argument("--tasks", type=int, default=0, help="the N largest tasks (0: all)")
    args = p.parse_args()

    import numpy as np
    import torch

    from t2v_ray.core.distance import pairwise_symmetric, symmetric_distance
    from t2v_ray.core.heads import HeadConfig
    from t2v_ray.data.dataset import TaskDataset
    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.probes import get_probe
    from t2v_ray.task2vec import EmbedConfig, Task2Vec

    torch.set_num_threads(1)
    lib = TaskLibrary.open(args.library)
    specs = sorted(lib.tasks, key=lambda t: (-t.n_train, t.task_id))[: args.tasks or None]
    probe = get_probe("efficientnet_lite0", weights="default", input_size=64)
    data = {s.task_id: TaskDataset(lib.read_task(s.task_id, "train"), probe.transform) for s in specs}
    for max_samples in args.max_samples:
        vec: dict[int, list[np.ndarray]] = {0: [], 1: []}
        t0 = time.perf_counter()
        for seed in (0, 1):
            head = HeadConfig(epochs=2, epoch_size=2000, lr=1e-3)
            cfg = EmbedConfig(
                n_draws=0, max_classes=3, max_samples=max_samples, batch_size=64, head=head, seed=seed
            )
            t2v = Task2Vec(probe, config=cfg)
            vec[seed] = [t2v.embed(data[s.task_id]).vector for s in specs]
        between = pairwise_symmetric(np.stack(vec[0]))
        median = float(np.median(between[np.triu_indices(len(specs), 1)]))
        print(
            f"\nmax_samples={max_samples}: median between-task d_sym {median:.4f} ({time.perf_counter() - t0:.0f} s)"
        )
        print(f"{'task':42s} {'n_train':>7s} {'d_sym(seed0,seed1)':>18s} {'ratio':>6s}")
        worst = 0.0
        for s, a, b in zip(specs, vec[0], vec[1], strict=True):
            d = float(symmetric_distance(a, b))
            worst = max(worst, d / median)
            print(f"{s.task_id:42s} {s.n_train:7d} {d:18.4f} {d / median:6.3f}")
        print(f"worst ratio {worst:.3f} (target <= 0.10)")


if __name__ == "__main__":
    main()
