"""Entrypoint for ``ray job submit``: the whole method (library → experts → embed → grid → select) from one config.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/pipeline.py --config jobs/configs/taxonomy.yaml storage=s3://BUCKET/t2v/taxonomy
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
    parser.add_argument("--config", required=True, help="PipelineConfig YAML (jobs/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)

    from rich.console import Console

    from t2v_ray.config import load_config
    from t2v_ray.pipeline import PipelineConfig, StageError, exit_code, run_pipeline

    cfg = load_config(PipelineConfig, args.config, args.overrides)
    try:
        result = run_pipeline(cfg, log=Console(width=130).print)
    except StageError as err:
        print(f"pipeline stopped: {err}", file=sys.stderr)
        return 1
    for protocol, table in result["tables"].items():
        print(f"\nTable 1 ({protocol}):\n{table.to_string(index=False)}")
    print("stage seconds:", {k: round(v, 1) for k, v in result["seconds"].items()})
    for failures in result["failures"]:
        print(f"partial: {failures.line()}", file=sys.stderr)
    return exit_code(cfg, result)


if __name__ == "__main__":
    sys.exit(main())
