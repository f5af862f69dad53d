"""Check what ``make demo`` left in its storage folder (run by ``.ci/run`` after the README's commands).

    python tests/e2e/check_demo.py [STORAGE] [--same-as OTHER_STORAGE]

Checks, for the demo config: both Table 1 files of every protocol with every selector row; ``experts.parquet``
with the generic expert plus ``n_experts`` fine-tuned experts that all have a test error; every embedding and
grid pair ``ok``. With ``--same-as``, the Table 1 numbers of both runs must be identical (determinism).
Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def problems(storage: Path) -> list[str]:
    """Everything wrong with the demo outputs under ``storage`` (empty: all good)."""
    from t2v_ray.config import load_config
    from t2v_ray.pipeline import PipelineConfig
    from t2v_ray.report.evaluate import SELECTOR_ORDER

    cfg = load_config(PipelineConfig, REPO / "t2v_ray" / "configs" / "demo.yaml")
    res, out = storage / "results", []
    for protocol in cfg.protocols:
        folder = res / "select" / protocol
        for name in ("table1.md", "table1.csv"):
            if not (folder / name).is_file():
                out.append(f"{folder / name}: missing")
        if (folder / "table1.csv").is_file():
            rows = set(pd.read_csv(folder / "table1.csv")["selector"])
            out += [f"{folder}/table1.csv: no row {s!r}" for s in SELECTOR_ORDER if s not in rows]
    experts = pd.read_parquet(res / "experts.parquet")
    tuned = experts[experts["expert_id"] != "generic"]
    if "generic" not in set(experts["expert_id"]):
        out.append("experts.parquet: no generic expert")
    if len(tuned) != cfg.n_experts or tuned["test_error"].isna().any():
        out.append(
            f"experts.parquet: want {cfg.n_experts} fine-tuned experts with a test error, got\n{tuned}"
        )
    for name in ("embeddings.parquet", "grid.parquet"):
        table = pd.read_parquet(res / name)
        bad = table[table["status"] != "ok"]
        if len(table) == 0 or len(bad):
            out.append(f"{name}: {len(bad)} of {len(table)} rows not ok")
    return out


def differences(a: Path, b: Path) -> list[str]:
    """Selectors whose Table 1 numbers differ between two runs."""
    out = []
    for folder in sorted((a / "results" / "select").iterdir()):
        ta = pd.read_csv(folder / "table1.csv").set_index("selector")
        tb = pd.read_csv(b / "results" / "select" / folder.name / "table1.csv").set_index("selector")
        if not ta.equals(tb):
            diff = ta.compare(tb) if ta.shape == tb.shape else f"{ta}\n!=\n{tb}"
            out.append(f"{folder.name}: Table 1 differs between {a} and {b}:\n{diff}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("storage", nargs="?", default="t2v-data")
    parser.add_argument("--same-as", help="another demo storage folder whose Table 1 must be identical")
    args = parser.parse_args()
    found = problems(Path(args.storage))
    if args.same_as:
        found += problems(Path(args.same_as)) + differences(Path(args.storage), Path(args.same_as))
    for p in found:
        print(f"check_demo: {p}")
    print(
        f"check_demo: {'FAILED' if found else 'ok'} ({args.storage}{' vs ' + args.same_as if args.same_as else ''})"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
