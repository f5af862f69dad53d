"""tests/infra/iam_eval.py follows IAM's rules on the cases the template checks rely on."""

from __future__ import annotations

import pytest

from .iam_eval import Values, allowed

ALLOW_ALL = {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}
DENY_SECRET = {"Effect": "Deny", "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::b/secret/*"}


def test_explicit_deny_wins_and_nothing_is_allowed_by_default():
    sts = [ALLOW_ALL, DENY_SECRET]
    assert allowed(sts, "s3:PutObject", "arn:aws:s3:::b/data/x")
    assert not allowed(sts, "s3:PutObject", "arn:aws:s3:::b/secret/x")
    assert allowed(sts, "s3:GetObject", "arn:aws:s3:::b/secret/x")
    assert not allowed(sts, "s3:GetObject", "arn:aws:s3:::other/x")
    assert not allowed([], "s3:GetObject", "arn:aws:s3:::b/x")


def test_actions_are_case_insensitive_and_question_mark_is_one_character():
    st = {
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "arn:s:secret:t2v/x-??????",
    }
    assert allowed([st], "SecretsManager:getsecretvalue", "arn:s:secret:t2v/x-AbC123")
    assert not allowed([st], "secretsmanager:GetSecretValue", "arn:s:secret:t2v/x-y-AbC123")


def test_conditions():
    st = {
        "Effect": "Allow",
        "Action": "ec2:CreateTags",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"ec2:ResourceTag/c": "t2v"},
            "ForAllValues:StringNotEquals": {"aws:TagKeys": ["c"]},
        },
    }
    assert allowed([st], "ec2:CreateTags", "i", **{"ec2:ResourceTag/c": "t2v", "aws:TagKeys": ["s"]})
    assert not allowed([st], "ec2:CreateTags", "i", **{"ec2:ResourceTag/c": "t2v", "aws:TagKeys": ["s", "c"]})
    assert not allowed([st], "ec2:CreateTags", "i", **{"aws:TagKeys": ["s"]})  # missing key: no match
    null = {**st, "Condition": {"Null": {"ec2:ResourceTag/c": "false"}}}
    assert allowed([null], "ec2:CreateTags", "i", **{"ec2:ResourceTag/c": "anything"})
    assert not allowed([null], "ec2:CreateTags", "i")


def test_what_it_does_not_model_raises():
    with pytest.raises(NotImplementedError):
        allowed(
            [{**ALLOW_ALL, "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}],
            "s3:GetObject",
            "arn:aws:s3:::b/x",
        )
    with pytest.raises(NotImplementedError):
        allowed([{"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}], "s3:GetObject", "x")


def test_values_resolve_intrinsics():
    cfn = {"Parameters": {"NamePrefix": {"Default": "t2v"}}}
    v = Values(cfn)
    assert v.resolve({"Fn::Sub": "arn:${AWS::Partition}:x:${NamePrefix}/y"}) == "arn:aws:x:t2v/y"
    assert v.resolve({"Fn::Sub": ["${A}-${NamePrefix}", {"A": {"Ref": "NamePrefix"}}]}) == "t2v-t2v"
    assert v.resolve({"Fn::GetAtt": ["RayNodesSecurityGroup", "GroupId"]}) == "sg-0ray"
    with pytest.raises(KeyError, match="Nope"):
        v.resolve({"Ref": "Nope"})
