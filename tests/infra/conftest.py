"""Helpers for the cluster/ and infra/ checks: repo paths, a CloudFormation-aware YAML loader, infra/names.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CFN_TEMPLATE = REPO / "infra" / "t2v.cfn.yaml"
AWS_CLUSTER = REPO / "cluster" / "aws.yaml"
KUBERAY = REPO / "cluster" / "kuberay"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags (!Ref, !Sub, !GetAtt ...) into their long form."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_cfn(path: Path = CFN_TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def constraint_version(package: str) -> str:
    """Exact version pinned for ``package`` in constraints.txt."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.lower().startswith(f"{package.lower()}=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{package} not pinned in constraints.txt")


@pytest.fixture(scope="session")
def names() -> dict:
    return load_yaml(REPO / "infra" / "names.yaml")


@pytest.fixture(scope="session")
def prefix(names: dict) -> str:
    return names["name_prefix"]


@pytest.fixture(scope="session")
def cfn() -> dict:
    return load_cfn()


@pytest.fixture(scope="session")
def aws_cluster() -> dict:
    return load_yaml(AWS_CLUSTER)
