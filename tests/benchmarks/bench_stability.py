"""Embedding stability: how far two seeds of the same task land, against the spread between tasks.

    .venv/bin/python tests/benchmarks/bench_stability.py --library URI [--max-samples 256 10000] [--tasks N]
    .venv/bin/python tests/benchmarks/bench_stability.py --compare A/embeddings.parquet B/embeddings.parquet

For each ``max_samples`` setting, every task is embedded twice with the demo's estimator (EfficientNet-Lite0 at
64 px, exact Fisher over the 3 most probable classes, 2 head epochs), seeds 0 and 1, in this process with one
torch thread. Prints per task d_sym(seed 0, seed 1) and its ratio to the median between-task d_sym (seed 0);
issue 13's target is a ratio <= 0.10 for every task. Seeds change which images are subsampled (when a task has
more than ``max_samples``) and the head's balanced draws.

``--compare`` reads two stored embedding runs of the same library instead (e.g. the demo's and a ``t2v embed``
rerun of it with ``embed.seed=1`` and another ``--out``) and prints the same table for every task they share:
that measures the configuration a run actually used, on all tasks, with the stage's own actors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two embeddings.parquet files to compare")
    p.add_argument("--max-samples", type=int, nargs="+", default=[256, 10_000])
    p.add_argument("--tasks", type=int, default=0, help="the N largest tasks (0: all)")
    args = p.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    if not args.library:
        p.error("--library is required (or --compare A B)")

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


def print_table(names, sizes, vec_a, vec_b, median: float) -> None:
    from t2v_ray.core.distance import symmetric_distance

    print(f"{'task':42s} {'n_train':>7s} {'d_sym(seed0,seed1)':>18s} {'ratio':>6s}")
    ratios = []
    for name, n, a, b in zip(names, sizes, vec_a, vec_b, strict=True):
        d = float(symmetric_distance(a, b))
        ratios.append(d / median)
        print(f"{name:42s} {n:7d} {d:18.4f} {d / median:6.3f}")
    r = sorted(ratios)
    print(
        f"ratio: worst {r[-1]:.3f}, median {r[len(r) // 2]:.3f}, "
        f"{sum(x <= 0.10 for x in r)}/{len(r)} tasks <= 0.10 (target: all)"
    )


def compare(a_uri: str, b_uri: str) -> None:
    """Per-task d_sym between two stored runs, against run A's median between-task d_sym."""
    import numpy as np
    import pyarrow.parquet as pq

    from t2v_ray.core.distance import pairwise_symmetric
    from t2v_ray.results.embeddings import load_embeddings

    a, b = load_embeddings(a_uri), load_embeddings(b_uri)
    common = [t for t in a.task_ids if t in set(b.task_ids)]
    va, vb = a.vectors[a.rows(common)], b.vectors[b.rows(common)]
    between = pairwise_symmetric(va)
    median = float(np.median(between[np.triu_indices(len(common), 1)]))
    table = pq.read_table(a_uri, columns=["task_id", "n_samples", "status"]).to_pandas()
    n = table[table.status == "ok"].drop_duplicates("task_id", keep="last").set_index("task_id")["n_samples"]
    print(f"{len(common)} tasks; median between-task d_sym (A) {median:.4f}; n_samples = images embedded")
    print_table(common, [int(n[t]) for t in common], va, vb, median)


if __name__ == "__main__":
    main()
