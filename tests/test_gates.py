"""Gates on the tools themselves: every tracked test file is collected by pytest, every tracked Python file is
seen by ruff, and no source folder has a name those tools skip (pytest's ``norecursedirs`` and ruff's default
``exclude`` both contain ``dist``, ``build`` and ``venv``: a package named so is silently never tested or linted).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIPPED_NAMES = {"dist", "build", "venv", "_build", "site-packages", "node_modules", "__pypackages__"}


def _tracked(*patterns: str) -> set[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", *patterns], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return {p for p in out.split("\0") if p}


def test_every_tracked_test_file_is_collected():
    tracked = {p for p in _tracked("tests/**/test_*.py", "tests/test_*.py") if (REPO / p).exists()}
    assert tracked, "no test files found: the glob is wrong"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    collected = {line.split("::", 1)[0] for line in proc.stdout.splitlines() if "::" in line}
    missing = sorted(tracked - collected)
    assert not missing, f"tracked test files pytest does not collect: {missing}\n{proc.stdout[-2000:]}"


def test_ruff_sees_every_tracked_python_file():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this interpreter")
    tracked = {p for p in _tracked("*.py") if (REPO / p).exists()}
    proc = subprocess.run(
        [str(ruff), "check", "--show-files", "."], cwd=REPO, capture_output=True, text=True, check=True
    )
    seen = {str(Path(line.strip()).resolve().relative_to(REPO)) for line in proc.stdout.splitlines() if line}
    missing = sorted(tracked - seen)
    assert not missing, f"tracked Python files ruff does not check: {missing}"


def test_no_tracked_file_sits_in_a_folder_tools_skip():
    bad = sorted(p for p in _tracked() if SKIPPED_NAMES & set(Path(p).parts[:-1]))
    assert not bad, f"files under folders that pytest/ruff skip by default: {bad}"
