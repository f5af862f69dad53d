"""Entrypoint for ``ray job submit``: fine-tune experts (see ``t2v experts train --help`` for the settings).

    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/train_experts.py \
        --library s3://bucket/lib --out s3://bucket/run --config jobs/configs/experts.yaml tune.gpus_per_trial=1
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
    parser.add_argument("--out", required=True, help="storage root for experts/")
    parser.add_argument("--config", help="YAML config (ExpertsConfig fields)")
    parser.add_argument("--resume", action="store_true", help="restore the interrupted Tune run first")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)

    from rich.console import Console

    from t2v_ray.cli.experts import load_experts_config
    from t2v_ray.stages.experts import run_experts

    where = [f"library={args.library}", f"out={args.out}", f"resume={args.resume}"]
    summary = run_experts(load_experts_config(args.config, [*where, *args.overrides]))
    Console().print(summary.table())
    for expert_id, message in summary.errors:
        print(f"error {expert_id}: {message}", file=sys.stderr)
    return 2 if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
