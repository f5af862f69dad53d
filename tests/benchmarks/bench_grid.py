"""Classifier-grid overhead: grid wall time per pair over one feature-extraction pass per pair (not a timed test).

What it measures, on the same tiny library and experts:
(a) baseline: one frozen feature pass over each pair's train+test images, in this process, with as many torch
    threads as a trial gets (the unavoidable work of the grid);
(b) the grid on local Ray Tune, one trial at a time on one CPU (same compute as the baseline), with MLflow sqlite
    and the paper's classifier recipe (16 epochs x 10,000 balanced draws, Adam lr 1e-4, wd 5e-4).
It prints (b)/(a) in steady state (per pair, after the first pair: target <= 1.3: head training on cached
features must be nearly free) and overall (including Ray/Tune start-up), the split of a trial's time, and
pairs/minute, also with as many concurrent trials as CPUs.

Usage: python tests/benchmarks/bench_grid.py [--probe resnet18] [--size 112] [--per-class 24] [--experts 2]
       [--transfer] [--skip-concurrent]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _setup(tmp: Path, args: argparse.Namespace) -> tuple[str, list[str], list[str]]:
    from t2v_ray.results.experts import ExpertStore
    from t2v_ray.stages.experts import ExpertsConfig, build_expert
    from tests.train.tiny_tasks import build_tiny_library

    lib = str(tmp / "library")
    tasks = build_tiny_library(lib, n_train=args.per_class, n_test=args.per_class // 2)
    cfg = ExpertsConfig(probe=args.probe, weights=None, input_size=args.size)
    for i in range(args.experts):  # random-init copies: timing does not depend on what the weights are
        build_expert(f"expert{i}", [], cfg, lib, str(tmp / "store"))
    return lib, tasks, ExpertStore(str(tmp / "store")).expert_ids()


def _baseline(lib: str, store: str, experts: list[str], tasks: list[str]) -> dict[tuple[str, str], float]:
    import torch

    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.results.experts import ExpertStore
    from t2v_ray.train.extract import extract_pair
    from t2v_ray.train.settings import FeatureSettings

    torch.set_num_threads(1)
    library, out = TaskLibrary.open(lib), {}
    for e in experts:
        _, probe = ExpertStore(store).load_probe(e)
        extract_pair(library, tasks[0], probe, FeatureSettings())  # warm-up (allocator, first decode)
        for t in tasks:
            start = time.perf_counter()
            extract_pair(library, t, probe, FeatureSettings())
            out[(e, t)] = time.perf_counter() - start
    return out


def _grid(tmp: Path, lib: str, name: str, transfer: bool, concurrent: int) -> tuple[float, list[dict]]:
    from t2v_ray.distributed.tune_utils import TuneSettings
    from t2v_ray.stages.grid import GridConfig, run_grid
    from t2v_ray.track import TrackingSettings

    cfg = GridConfig(
        transfer=transfer,
        tune=TuneSettings(
            cpus_per_trial=1, max_concurrent=concurrent, storage_path=str(tmp / "tune"), verbose=0
        ),
        tracking=TrackingSettings(uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=str(tmp / "mlartifacts")),
    )
    start = time.perf_counter()
    where = dict(library=lib, expert_store=str(tmp / "store"), out=str(tmp / name))
    table = run_grid(dataclasses.replace(cfg, **where)).grid
    return time.perf_counter() - start, table.to_pylist()


def _report(label: str, wall: float, rows: list[dict], extract: dict) -> dict:
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    done = sorted(datetime.fromisoformat(r["finished_at"]).timestamp() for r in rows)
    base = sum(extract.values())
    per_pair = (done[-1] - done[0]) / (len(done) - 1)
    mean = {
        k: statistics.mean(r[k] for r in rows) for k in ("extract_seconds", "head_seconds", "score_seconds")
    }
    return {
        "run": label,
        "pairs": len(rows),
        "wall_s": round(wall, 1),
        "baseline_extract_per_pair_s": round(base / len(rows), 3),
        "steady_grid_per_pair_s": round(per_pair, 3),
        "ratio_steady": round(per_pair / (base / len(rows)), 2),
        # The same ratio against the extraction passes timed inside the trials: immune to load drifting
        # between the baseline and the grid on a shared machine.
        "ratio_steady_vs_in_trial_pass": round(per_pair / mean["extract_seconds"], 2),
        "ratio_overall": round(wall / base, 2),
        "pairs_per_minute": round(60 * len(rows) / wall, 1),
        "trial_mean_s": {k: round(v, 3) for k, v in mean.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probe", default="resnet18")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--experts", type=int, default=2)
    parser.add_argument("--transfer", action="store_true", help="also score LogME/LEEP/NCE/H-score per pair")
    parser.add_argument("--skip-concurrent", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    tmp = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    lib, tasks, experts = _setup(tmp, args)
    extract = _baseline(lib, str(tmp / "store"), experts, tasks)

    from t2v_ray.distributed.ray_utils import init_ray

    init_ray(num_cpus=2)
    reports = [_report("grid, 1 trial at a time", *_grid(tmp, lib, "serial", args.transfer, 1), extract)]
    if not args.skip_concurrent:
        reports.append(
            _report("grid, 2 concurrent trials", *_grid(tmp, lib, "parallel", args.transfer, 0), extract)
        )
    print(json.dumps({"config": vars(args), "results": reports}, indent=1))
    for r in reports:
        print(
            f"{r['run']}: {r['pairs']} pairs, wall {r['wall_s']} s, {r['pairs_per_minute']} pairs/min; "
            f"per pair {r['steady_grid_per_pair_s']} s vs one extraction pass {r['baseline_extract_per_pair_s']} s "
            f"-> ratio {r['ratio_steady']} steady (target <= 1.3; {r['ratio_steady_vs_in_trial_pass']} against the "
            f"passes timed inside the trials), {r['ratio_overall']} overall incl. start-up"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
