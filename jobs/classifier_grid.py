"""Entrypoint for ``ray job submit``: the expert×task classifier grid (see ``t2v grid run --help``).

    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/classifier_grid.py \
        --library s3://bucket/lib --experts s3://bucket/run --out s3://bucket/run --resume tune.gpus_per_trial=0.25
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, sys.path[0] is jobs/ (whose file names must never shadow a stdlib module): replace it with the
# repository root (the uploaded working dir), so `t2v_ray` imports from it.
sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--library", required=True, help="task library URI")
    parser.add_argument("--experts", required=True, help="storage root holding experts/")
    parser.add_argument("--out", required=True, help="storage root for features and grid.parquet")
    parser.add_argument("--config", help="YAML config (GridConfig fields)")
    parser.add_argument("--resume", action="store_true", help="restore the interrupted Tune experiment first")
    parser.add_argument("--strict", action="store_true", help="exit 2 when any pair is not ok")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)

    from rich.console import Console

    from t2v_ray.cli.grid import load_grid_config
    from t2v_ray.stages.grid import run_grid

    where = [f"library={args.library}", f"expert_store={args.experts}", f"out={args.out}"]
    cfg = load_grid_config(args.config, [*where, f"resume={args.resume}", *args.overrides])
    summary = run_grid(cfg)
    Console().print(summary.table())
    return 2 if args.strict and summary.bad else 0


if __name__ == "__main__":
    sys.exit(main())
