"""``t2v --help`` and every command's ``--help`` work where torch, Ray and MLflow cannot be imported at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI in a fresh interpreter whose import system refuses the heavy libraries: any import of them
# (even one deferred until a command's help is shown) fails with ModuleNotFoundError.
_BLOCKED_CLI = """
import sys

BLOCKED = ("torch", "torchvision", "ray", "mlflow")


class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked by the test: {name}", name=name)
        return None


sys.meta_path.insert(0, Block())
sys.argv = ["t2v", *sys.argv[1:]]
from t2v_ray.cli import app

app()
"""

COMMANDS = [
    [],
    ["library"],
    ["library", "build", "glyphs"],
    ["library", "build", "fashion-mnist"],
    ["library", "import-folder"],
    ["library", "import-attributes"],
    ["library", "validate"],
    ["embed"],
    ["experts", "train"],
    ["grid", "run"],
    ["select", "evaluate"],
    ["select", "rank"],
    ["report"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "t2v")
def test_help_needs_neither_torch_nor_ray(command: list[str]):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    res = subprocess.run(
        [sys.executable, "-c", _BLOCKED_CLI, *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Usage:" in res.stdout and "--help" in res.stdout
