"""Per-stage cost of a finished ``t2v demo`` / pipeline run, per item and relative to one feature pass.

    .venv/bin/python tests/benchmarks/bench_pipeline.py --storage t2v-data-default [--images 2048]

It reads the newest ``<storage>/results/pipeline_runs/*.json`` (stage wall times, written by the pipeline) and
what the stages stored (library sizes, embeddings' ``n_samples``, grid rows), then measures, in this process on
one torch thread, one frozen forward pass of the run's probe over real images of the library (decode included,
the run's input size). For each stage it prints wall seconds, seconds per item, and

    ratio = wall seconds x cores / (images the stage passes through the probe x one feature pass per image)

i.e. how many forward passes' worth of CPU time each image costs in that stage (a backward pass costs ~2
forward passes; the embed stage's exact Fisher over 3 classes ~3 forward-backward passes). Run it on a fresh
run: a cached rerun records near-zero stage times. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", default="t2v-data-default", help="the run's storage root")
    p.add_argument("--images", type=int, default=2048, help="images for the one-pass measurement")
    p.add_argument(
        "--cores", type=float, default=None, help="cores the run had (default: the recorded count)"
    )
    return p.parse_args()


def newest_run(results: Path) -> dict:
    runs = sorted((results / "pipeline_runs").glob("*.json"))
    if not runs:
        raise SystemExit(f"no pipeline run recorded under {results}/pipeline_runs (run `t2v demo` first)")
    full = [json.loads(p.read_text()) for p in runs]
    complete = [r for r in full if {"experts", "embed", "grid"} <= set(r["seconds"])]
    return (complete or full)[-1]


def one_pass_seconds(library: str, cfg: dict, n_images: int) -> float:
    """Seconds per image of decode + transform + frozen forward (channels_last, batches of 128, 1 thread)."""
    import torch

    from t2v_ray.data.dataset import TaskDataset
    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.probes import get_probe
    from t2v_ray.train.extract import extract_features

    torch.set_num_threads(1)
    emb = cfg["embed"]
    probe = get_probe(emb["probe"], weights=emb["weights"], input_size=emb["input_size"])
    lib = TaskLibrary.open(library)
    sets, n = [], 0
    for spec in sorted(lib.tasks, key=lambda t: -t.n_train):
        sets.append(TaskDataset(lib.read_task(spec.task_id, split="train"), probe.transform, split="train"))
        n += len(sets[-1])
        if n >= n_images:
            break
    extract_features(probe.features, sets[0], batch_size=128)  # warm-up
    start = time.perf_counter()
    for ds in sets:
        extract_features(probe.features, ds, batch_size=128)
    return (time.perf_counter() - start) / n


def main() -> int:
    import numpy as np

    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.results.grid import load_grid
    from t2v_ray.results.layout import EMBEDDINGS_FILE, GRID_FILE

    args = parse_args()
    storage = Path(args.storage).resolve()
    results, library = storage / "results", str(storage / "library")
    run = newest_run(results)
    cfg, secs = run["config"], run["seconds"]
    cores = args.cores or run.get("cpus") or os.cpu_count()
    lib = TaskLibrary.open(library)
    n_train = sum(t.n_train for t in lib.tasks)
    n_test = sum(t.n_test for t in lib.tasks)
    import pyarrow.parquet as pq

    emb = pq.read_table(results / EMBEDDINGS_FILE, columns=["status", "n_samples"]).to_pandas()
    embedded = int(emb.loc[emb.status == "ok", "n_samples"].sum())
    grid = load_grid(str(results / GRID_FILE))
    ok = grid[grid.status == "ok"]
    grid_images = int((ok.n_train + ok.n_test).sum())
    tr = cfg["experts"]["train"]
    n_experts = int(ok.expert_id.nunique()) - 1  # fine-tuned ones; generic is not trained
    expert_images = n_experts * tr["finetune_epochs"] * tr["epoch_size"]
    print(f"run {run['started_at']} on {run.get('host')} ({cores} cores, load {run.get('load_at_start')})")
    print(f"measuring one feature pass over {args.images} images ...", flush=True)
    per_image = one_pass_seconds(library, cfg, args.images)
    print(f"one feature pass: {1e3 * per_image:.2f} ms/image (decode + forward, 1 thread)\n")
    rows = [
        ("library", secs.get("library"), n_train + n_test, "images rendered", n_train + n_test),
        ("experts", secs.get("experts"), n_experts, "experts (SGD draws)", expert_images),
        ("embed", secs.get("embed"), int((emb.status == "ok").sum()), "tasks (images embedded)", embedded),
        ("grid", secs.get("grid"), len(ok), "pairs (images passed)", grid_images),
        ("select", secs.get("select"), len(cfg.get("protocols", [])), "protocols", None),
    ]
    print(f"{'stage':8} {'wall s':>8} {'items':>6} {'s/item':>8}  {'images':>9}  {'ratio':>6}  item")
    for name, wall, items, what, images in rows:
        if wall is None:
            continue
        per = wall / items if items else float("nan")
        ratio = wall * cores / (images * per_image) if images else float("nan")
        print(f"{name:8} {wall:8.1f} {items:6d} {per:8.2f}  {images or 0:9d}  {ratio:6.2f}  {what}")
    total = sum(v for v in secs.values())
    print(
        f"\ntotal {total:.0f} s = {total / 60:.1f} min; grid pairs {len(ok)}, {n_train} train + {n_test} test"
    )
    head = ok[["extract_seconds", "head_seconds", "score_seconds"]].sum()
    print("grid trial time split (summed over pairs): " + ", ".join(f"{k} {v:.0f}s" for k, v in head.items()))
    print(f"embedded images per task: median {np.median(emb.n_samples):.0f}, max {emb.n_samples.max():.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
