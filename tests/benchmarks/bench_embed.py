"""Throughput of ``t2v embed`` on Ray: tasks/minute with 1 and 2 actors, and the overhead over bare Task2Vec.

    .venv/bin/python tests/benchmarks/bench_embed.py [--library URI] [--max-tasks 16] [--no-mlflow]

Steps, on one shared local Ray instance (num_cpus=2):
1. bare: ``Task2Vec.embed`` in this process, 1 torch thread, data already decoded into a ``TaskDataset``;
2. ``run_embed`` with 1 actor (1 CPU), then with 2 actors (1 CPU each), each into a fresh output folder.
Tasks/minute count the dispatch loop, from the first task sent to the last result (actor start-up is reported
apart: it is paid once per run, not per task). Per-task overhead = (1-actor seconds per task) / (bare seconds per task) - 1, so it
includes reading shards from storage, decoding, the driver round trip, Parquet flushes and MLflow logging.
Targets: scaling >= 1.7x on 2 cores, overhead <= 20%. The library defaults to the --small glyph library.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[2])  # repo root, for `tests.dist.conftest`


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", help="library URI (default: build the --small glyph library in a temp dir)")
    p.add_argument("--max-tasks", type=int, default=16, help="embed the first N tasks")
    p.add_argument("--probe", default="small_cnn")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--max-samples", type=int, default=400)
    p.add_argument("--no-mlflow", action="store_true", help="leave MLflow logging out of the measurement")
    return p.parse_args()


def build_library(root: Path) -> str:
    uri = str(root / "glyphs-small")
    try:
        from t2v_ray.data.builders.glyphs import build_glyphs
    except ImportError:  # glyph builder missing: a synthetic library of similar size
        from tests.dist.conftest import build_synthetic_library

        build_synthetic_library(uri, n_tasks=16, per_class=40)
        return uri
    build_glyphs(uri, small=True, seed=0, processes=2, contact_sheet=False, validate=False)
    return uri


def bare_seconds(cfg, task_ids: list[str]) -> list[float]:
    """Seconds of ``Task2Vec.embed`` alone per task (1 thread, images already in memory)."""
    import torch

    from t2v_ray.data.dataset import TaskDataset
    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.dist.embed_worker import build_probe
    from t2v_ray.task2vec import Task2Vec

    torch.set_num_threads(1)
    lib = TaskLibrary.open(cfg.library)
    probe = build_probe(cfg)
    t2v = Task2Vec(probe, config=cfg.embed, device="cpu")
    out = []
    for tid in task_ids:
        ds = TaskDataset(lib.read_task(tid, split="train"), probe.transform, split="train")
        t0 = time.perf_counter()
        t2v.embed(ds)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    args = parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")
    from dataclasses import replace

    import ray

    from t2v_ray.core.heads import HeadConfig
    from t2v_ray.data.library import TaskLibrary
    from t2v_ray.dist.embed import EmbedJobConfig, MlflowConfig, run_embed
    from t2v_ray.task2vec import EmbedConfig

    root = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    library = args.library or build_library(root)
    ids = [t.task_id for t in TaskLibrary.open(library).tasks][: args.max_tasks]
    mlflow = MlflowConfig(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", enabled=not args.no_mlflow)
    embed = EmbedConfig(max_samples=args.max_samples, head=HeadConfig(epochs=2, epoch_size=2000))
    base = EmbedJobConfig(
        library=library,
        out="",
        probe=args.probe,
        weights=None,
        input_size=args.input_size,
        tasks=",".join(ids),
        cpus_per_actor=1.0,
        embed=embed,
        mlflow=mlflow,
        progress=False,
    )
    print(
        f"library {library}: {len(ids)} tasks; probe {args.probe} @ {args.input_size}px; load {os.getloadavg()}"
    )
    bare = bare_seconds(base, ids)
    bare_mean = sum(bare) / len(bare)
    print(f"bare Task2Vec.embed: {bare_mean:.2f} s/task ({60 / bare_mean:.1f} tasks/min)")

    temp_dir = tempfile.mkdtemp(prefix="t2vbench-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    rates = {}
    for n in (1, 2):
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        s = run_embed(replace(base, actors=n, out=str(root / f"out-{n}")))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        driver_cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / len(ids)
        assert s.ok + s.error == len(ids), s.to_dict()
        rates[n] = s.tasks_per_minute
        # Share of the loop's actor-seconds spent inside embed(): what the pool itself loses, whatever the load.
        busy = sum(s.task_seconds) / (n * s.loop_seconds)
        print(
            f"{n} actor(s): {s.tasks_per_minute:.1f} tasks/min, start-up {s.startup_seconds:.1f} s, "
            f"mean worker time {s.mean_task_seconds:.2f} s/task, actor busy {100 * busy:.0f}%, "
            f"driver CPU {driver_cpu:.2f} s/task, "
            f"ok {s.ok}, error {s.error}"
        )
    ray.shutdown()
    per_task_1 = 60 / rates[1]
    print(f"scaling 2 vs 1 actor: {rates[2] / rates[1]:.2f}x (target >= 1.7)")
    print(f"per-task overhead over bare embed: {100 * (per_task_1 / bare_mean - 1):.0f}% (target <= 20%)")
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
