"""Entrypoint for ``ray job submit``: embed a library's tasks (see ``t2v embed --help`` for the settings).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/embed.py --config jobs/configs/embed.yaml out=s3://bucket/runs/r34
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
    parser.add_argument("--config", help="YAML config (EmbedJobConfig fields)")
    parser.add_argument("--strict", action="store_true", help="exit 2 when any task ends in error")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)

    from t2v_ray.cli.embed import load_embed_config, print_summary
    from t2v_ray.stages.embed import exit_code, run_embed

    summary = run_embed(load_embed_config(args.config, args.overrides))
    print_summary(summary)
    return exit_code(summary, args.strict)


if __name__ == "__main__":
    sys.exit(main())
