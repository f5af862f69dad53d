"""``t2v library import-folder`` on a tree holding very large images: seconds and library size with sizes kept
(``max_side=None``, what main did by default before issue 11) vs the default reduced-scale decode (1024 px).

    .venv/bin/python tests/benchmarks/bench_import_tree.py [--side 8000] [--rounds 2]

The tree: 3 classes of 10 small PNGs, plus, in one class two levels down, an ``--side``² RGBA PNG of noise
(incompressible: a photo-like file, ~256 MB at 8000) and a ``--side``² JPEG. Each import also validates the
library and draws its contact sheet, as the CLI does. Runs alternate so a neighbour's load hits both alike.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[2])  # repo root, for `tests.data.pngs`

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from t2v_ray.data.builders.folder import build_folder  # noqa: E402
from tests.data.pngs import write_png  # noqa: E402


def make_tree(root: Path, side: int) -> None:
    rng = np.random.default_rng(0)
    for cls in ("a/x", "a/y", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    noise = np.random.default_rng(1)
    write_png(root / "a/x/noise.png", side, side, 6, row=lambda _y: noise.bytes(side * 4))
    gradient = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    gradient.save(root / "a/y/photo.jpg", quality=85)


def run(root: Path, out: Path, max_side: int | None) -> tuple[float, int]:
    started = time.perf_counter()
    summary = build_folder(str(root), str(out), min_images=5, max_side=max_side)
    return time.perf_counter() - started, summary.size_bytes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=8000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        make_tree(root, args.side)
        times: dict[str, list[float]] = {"kept": [], "reduced": []}
        sizes = {}
        for r in range(args.rounds):
            for name, max_side in (("kept", None), ("reduced", 1024)):
                seconds, size = run(root, Path(tmp) / f"{name}{r}", max_side)
                times[name].append(seconds)
                sizes[name] = size
        for name in times:
            print(f"{name:8s} best {min(times[name]):6.1f} s  library {sizes[name] / 2**20:7.1f} MiB")
        print(f"speed-up {min(times['kept']) / min(times['reduced']):.1f}x, "
              f"size ratio {sizes['kept'] / sizes['reduced']:.0f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
