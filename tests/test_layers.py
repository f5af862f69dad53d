"""The layers of DESIGN.md, checked on the source: who may import whom (parsed with ``ast``, nothing imported),
and which modules load without torch or Ray."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "t2v_ray"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every import in the file, function bodies included; relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "jobs").glob("*.py"))
GRAPH = {p: imports(p) for p in SOURCES}


def _ours(module: str) -> bool:
    return module == "t2v_ray" or module.startswith("t2v_ray.")


def _violations(under: str, allowed) -> list[str]:
    bad = []
    for path, found in GRAPH.items():
        if module_name(path).startswith(under):
            bad += [
                f"{path.relative_to(ROOT)}:{line} imports {mod}" for mod, _, line in found if not allowed(mod)
            ]
    return bad


def test_core_imports_nothing_outside_core():
    heavy = ("ray", "mlflow", "boto3", "pyarrow")  # DESIGN.md: no Ray, MLflow, boto3 or filesystem code

    def allowed(mod: str) -> bool:
        if _ours(mod):
            return mod.startswith("t2v_ray.core")
        return mod.split(".")[0] not in heavy

    assert _violations("t2v_ray.core", allowed) == []


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("t2v_ray.stages", ("t2v_ray.cli",)),
        ("t2v_ray.results", ("t2v_ray.distributed", "t2v_ray.stages", "t2v_ray.cli", "ray")),
        ("t2v_ray.pipeline", ("t2v_ray.cli", "t2v_ray.distributed", "t2v_ray.report")),
        ("t2v_ray.distributed", ("t2v_ray.stages", "t2v_ray.cli", "t2v_ray.pipeline")),
        ("t2v_ray.track", ("t2v_ray.stages", "t2v_ray.distributed", "t2v_ray.cli")),
        ("t2v_ray.report", ("t2v_ray.distributed", "t2v_ray.cli", "t2v_ray.pipeline")),
    ],
)
def test_layer_never_imports_upward(layer: str, forbidden: tuple[str, ...]):
    def allowed(mod: str) -> bool:
        return not any(mod == f or mod.startswith(f + ".") for f in forbidden)

    assert _violations(layer, allowed) == []


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for path, found in GRAPH.items():
        for mod, names, line in found:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in mod.split(".") if p.startswith("_") and not p.startswith("__")]
            if _ours(mod) and private:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {mod}")
    assert bad == []


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    # The checks above would pass vacuously if deferred imports were missed: they are most of ours.
    src = tmp_path / "t2v_ray" / "stages" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("def f():\n    from t2v_ray.cli import common\n    from ..results import _hidden\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        found = imports(src)
    finally:
        ROOT = old
    assert ("t2v_ray.cli", ["common"], 2) in found and ("t2v_ray.results", ["_hidden"], 3) in found


_BLOCKED_IMPORT = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "ray", "mlflow"):
            raise ModuleNotFoundError(f"blocked by the test: {name}", name=name)

sys.meta_path.insert(0, Block())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
"""

LIGHT = [
    "t2v_ray.pipeline",
    "t2v_ray.stages.library",
    "t2v_ray.stages.embed",
    "t2v_ray.stages.experts",
    "t2v_ray.stages.grid",
    "t2v_ray.stages.select",
    "t2v_ray.results.layout",
    "t2v_ray.results.embeddings",
    "t2v_ray.results.grid",
    "t2v_ray.results.experts",
    "t2v_ray.results.features",
    "t2v_ray.track",
]


def test_stage_configs_and_results_load_without_torch_ray_or_mlflow():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, *LIGHT], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]


def test_pipeline_composes_stages_only():
    # Besides the stages: the config loader and where things live (storage paths, file names, MLflow default).
    helpers = ("t2v_ray.config", "t2v_ray.results.layout", "t2v_ray.data.storage", "t2v_ray.track")

    def allowed(mod: str) -> bool:
        return not _ours(mod) or mod.startswith("t2v_ray.stages.") or mod in helpers

    assert _violations("t2v_ray.pipeline", allowed) == []


def test_every_import_of_ours_resolves_deferred_ones_included():
    # Most of our imports sit in function bodies (to keep start-up light): a stale one after a module moved
    # would only fail when that function runs. Resolve them all here.
    import importlib

    def submodule(mod: str, name: str) -> bool:
        try:
            return importlib.util.find_spec(f"{mod}.{name}") is not None
        except ModuleNotFoundError:  # ``mod`` is a module, not a package
            return False

    missing = []
    for path, found in GRAPH.items():
        for mod, names, line in found:
            if not _ours(mod):
                continue
            module = importlib.import_module(mod)
            for name in names:
                if not hasattr(module, name) and not submodule(mod, name):
                    missing.append(f"{path.relative_to(ROOT)}:{line} {mod}.{name}")
    assert missing == []
