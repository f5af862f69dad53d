"""Select stage for ``ray job submit``: Table 1 and the report figures for a results root.

    ray job submit --working-dir . -- python jobs/select_experts.py --config jobs/configs/select.yaml results=s3://b/run

Arguments after the flags are dotted ``key=value`` overrides of ``t2v_ray.stages.select.SelectConfig``.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (keys of SelectConfig)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from t2v_ray.report.tables import table_markdown
    from t2v_ray.stages.select import resolve_config, run_select

    summary = run_select(resolve_config(args.config, {}, args.overrides))
    print(table_markdown(summary.table1, f"Table 1 ({summary.protocol})"))
    for name, uri in summary.written.items():
        print(f"wrote {name}: {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
