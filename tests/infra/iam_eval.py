"""A small IAM policy evaluator for the template's roles: explicit Deny wins, else any matching Allow.

Enough of IAM for infra/t2v.cfn.yaml: Action/Resource wildcards (``*``, ``?``), and the condition operators the
template uses (StringEquals, StringNotEquals, StringLike, Null, Bool, ForAllValues:StringNotEquals). Anything
else (NotAction, NotResource, other operators) raises, so a template change cannot make a check silently pass.
CloudFormation intrinsics are resolved with :class:`Values` (fixed account, region and resource ids).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

ACCOUNT, REGION = "123456789012", "us-west-2"


@dataclass
class Values:
    """What Ref / GetAtt / Sub resolve to (parameters default to the template's defaults)."""

    cfn: dict
    overrides: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        fixed = {
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": "t2v",
            "DataBucket": f"t2v-data-{ACCOUNT}-{REGION}",
            "DataBucket.Arn": f"arn:aws:s3:::t2v-data-{ACCOUNT}-{REGION}",
            "RayWorkerRole.Arn": f"arn:aws:iam::{ACCOUNT}:role/t2v-ray-worker",
            "RayNodesSecurityGroup.GroupId": "sg-0ray",
            "MlflowSecurityGroup.GroupId": "sg-0mlflow",
        }
        if name in self.overrides:
            return self.overrides[name]
        if name in fixed:
            return fixed[name]
        param = self.cfn["Parameters"].get(name)
        if param is not None and "Default" in param:
            return str(param["Default"])
        raise KeyError(f"no test value for {name!r}")

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(n) for n in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"}:
            return self.get(node["Ref"])
        if set(node) == {"Fn::GetAtt"}:
            return self.get(".".join(node["Fn::GetAtt"]))
        if set(node) == {"Fn::Sub"}:
            text, local = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
            local = {k: self.resolve(v) for k, v in local.items()}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: local.get(m[1]) or self.get(m[1]), text)
        return {k: self.resolve(v) for k, v in node.items()}


def role_statements(cfn: dict, role: str, values: Values) -> list[dict]:
    """Every statement that applies to ``role``: its managed policies of this template plus its inline ones."""
    props = cfn["Resources"][role]["Properties"]
    docs = []
    for arn in props.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and set(arn) == {"Ref"}:
            docs.append(cfn["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
    docs += [p["PolicyDocument"] for p in props.get("Policies", [])]
    out = []
    for doc in docs:
        st = doc["Statement"]
        out += values.resolve(st if isinstance(st, list) else [st])
    return out


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


_OPERATORS = {"Null", "ForAllValues:StringNotEquals", "StringEquals", "StringNotEquals", "StringLike", "Bool"}


def _condition_holds(op: str, key: str, expected: Any, context: dict[str, Any]) -> bool:
    if op not in _OPERATORS:
        raise NotImplementedError(f"condition operator {op} is not modelled by tests/infra/iam_eval.py")
    wanted = [str(v) for v in _as_list(expected)]
    actual = context.get(key)
    if op == "Null":
        return (actual is None) == (wanted == ["true"])
    if op == "ForAllValues:StringNotEquals":
        return all(a not in wanted for a in _as_list(actual or []))
    if actual is None:
        return op == "StringNotEquals"  # a missing key never equals anything
    if op == "StringEquals":
        return str(actual) in wanted
    if op == "StringNotEquals":
        return str(actual) not in wanted
    if op == "StringLike":
        return any(_glob(w, str(actual)) for w in wanted)
    return str(actual).lower() in [w.lower() for w in wanted]  # Bool


def _applies(st: dict, action: str, resource: str, context: dict[str, Any]) -> bool:
    unsupported = {"NotAction", "NotResource", "NotPrincipal"} & set(st)
    if unsupported:
        raise NotImplementedError(f"{sorted(unsupported)} in {st.get('Sid')}")
    if not any(_glob(a, action, case=False) for a in _as_list(st["Action"])):
        return False
    if not any(_glob(r, resource) for r in _as_list(st["Resource"])):
        return False
    return all(
        _condition_holds(op, key, expected, context)
        for op, block in st.get("Condition", {}).items()
        for key, expected in block.items()
    )


def allowed(statements: list[dict], action: str, resource: str, **context: Any) -> bool:
    """Whether ``statements`` allow ``action`` on ``resource``.

    Args:
        statements: resolved policy statements (:func:`role_statements`).
        action: e.g. ``"ec2:CreateTags"``.
        resource: a concrete ARN.
        **context: the request's condition keys, e.g. ``**{"aws:RequestTag/ray-cluster-name": "t2v"}``.
    """
    hits = [st for st in statements if _applies(st, action, resource, context)]
    if any(st["Effect"] == "Deny" for st in hits):
        return False
    return any(st["Effect"] == "Allow" for st in hits)
