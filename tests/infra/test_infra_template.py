"""infra/t2v.cfn.yaml without AWS: cfn-lint, bucket hardening, least-privilege IAM (checked on the template)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CFN_TEMPLATE


def _statements(policy_doc: dict) -> list[dict]:
    st = policy_doc["Statement"]
    return st if isinstance(st, list) else [st]


def _as_list(x):
    return x if isinstance(x, list) else [x]


def test_cfn_lint_passes():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    exe = [str(cfn_lint)] if cfn_lint.exists() else [sys.executable, "-m", "cfnlint"]
    proc = subprocess.run([*exe, str(CFN_TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bucket_is_versioned_encrypted_and_private(cfn):
    bucket = cfn["Resources"]["DataBucket"]
    props = bucket["Properties"]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    pab = props["PublicAccessBlockConfiguration"]
    assert set(pab) == {"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"}
    assert all(v is True for v in pab.values())
    assert bucket["DeletionPolicy"] == "Retain"
    # TLS only.
    policy = cfn["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]
    deny = [s for s in _statements(policy) if s["Effect"] == "Deny"]
    assert any(s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in deny)


def _bucket_refs(resource) -> set[str]:
    """Which data-bucket ARN forms a policy Resource entry is: {'bucket', 'objects', 'other'}."""
    out = set()
    for r in _as_list(resource):
        if r == {"Fn::GetAtt": ["DataBucket", "Arn"]}:
            out.add("bucket")
        elif isinstance(r, dict) and "Fn::Sub" in r and r["Fn::Sub"].startswith("${DataBucket.Arn}/"):
            out.add("objects")
        else:
            out.add("other")
    return out


def test_node_data_policy_touches_only_the_bucket(cfn):
    doc = cfn["Resources"]["DataBucketAccessPolicy"]["Properties"]["PolicyDocument"]
    seen = set()
    for st in _statements(doc):
        assert st["Effect"] == "Allow"
        actions = _as_list(st["Action"])
        assert not any(a in ("*", "s3:*") for a in actions)
        if any(a.startswith("s3:") for a in actions):
            assert all(a.startswith("s3:") for a in actions)
            kinds = _bucket_refs(st["Resource"])
            assert kinds <= {"bucket", "objects"}, st
            seen |= kinds
            if kinds == {"bucket"}:
                assert set(actions) <= {
                    "s3:ListBucket",
                    "s3:GetBucketLocation",
                    "s3:ListBucketMultipartUploads",
                }
            if kinds == {"objects"}:
                assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(actions)
        else:
            assert all(a.startswith("ssm:Get") for a in actions)
            for r in _as_list(st["Resource"]):
                assert ":parameter/${NamePrefix}" in r["Fn::Sub"]
    assert seen == {"bucket", "objects"}


def test_worker_role_has_data_access_only(cfn):
    props = cfn["Resources"]["RayWorkerRole"]["Properties"]
    assert props["ManagedPolicyArns"] == [{"Ref": "DataBucketAccessPolicy"}]
    assert "Policies" not in props
    trust = _statements(props["AssumeRolePolicyDocument"])
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]


def test_head_role_can_autoscale_but_only_pass_the_worker_role(cfn):
    props = cfn["Resources"]["RayHeadRole"]["Properties"]
    assert {"Ref": "DataBucketAccessPolicy"} in props["ManagedPolicyArns"]
    (policy,) = props["Policies"]
    sts = _statements(policy["PolicyDocument"])
    by_action = {a: st for st in sts for a in _as_list(st["Action"])}
    for needed in ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:DescribeInstances", "ec2:CreateTags"):
        assert needed in by_action, needed
    assert by_action["iam:PassRole"]["Resource"] == {"Fn::GetAtt": ["RayWorkerRole", "Arn"]}
    assert by_action["ec2:TerminateInstances"]["Condition"]["Null"] == {
        "ec2:ResourceTag/ray-cluster-name": "false"
    }
    # No S3, IAM admin or wildcard actions beyond the data policy.
    actions = set(by_action)
    assert not any(a.startswith("s3:") or a in ("*", "ec2:*", "iam:*") for a in actions)
    assert {a for a in actions if a.startswith("iam:")} == {"iam:PassRole"}


def test_irsa_role_is_optional_and_scoped_to_the_service_account(cfn):
    role = cfn["Resources"]["RayIrsaRole"]
    assert role["Condition"] == "CreateIrsaRole"
    template, variables = role["Properties"]["AssumeRolePolicyDocument"]["Fn::Sub"]
    # Substitute like CloudFormation would and check it is a valid, narrowly scoped trust policy.
    values = {
        "EksOidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/X",
        "Issuer": "oidc.eks.us-west-2.amazonaws.com/id/X",
        "K8sNamespace": "t2v",
        "K8sServiceAccount": "t2v-ray",
    }
    assert set(variables) == {"Issuer"}
    for k, v in values.items():
        template = template.replace("${" + k + "}", v)
    doc = json.loads(template)
    (st,) = doc["Statement"]
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    cond = st["Condition"]["StringEquals"]
    assert cond["oidc.eks.us-west-2.amazonaws.com/id/X:sub"] == "system:serviceaccount:t2v:t2v-ray"


@pytest.mark.parametrize("sg", ["RayNodesSecurityGroup", "MlflowSecurityGroup"])
def test_security_groups_never_open_to_the_world(cfn, sg):
    for rule in cfn["Resources"][sg]["Properties"]["SecurityGroupIngress"]:
        assert rule.get("CidrIp") in (None, {"Ref": "AdminCidr"}), rule
        assert "CidrIpv6" not in rule


def test_mlflow_server_serves_artifacts_from_the_bucket(cfn):
    user_data = cfn["Resources"]["MlflowServer"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert "--artifacts-destination" in user_data and 's3://$T2V_BUCKET/mlflow"' in user_data
    assert "T2V_BUCKET=${DataBucket}" in user_data
    assert 'mlflow==${MlflowVersion}"' in user_data
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in user_data
    assert "--allowed-hosts" in user_data  # MLflow 3 rejects unknown Host headers otherwise
    outputs = cfn["Outputs"]
    assert "${MlflowServer.PrivateIp}:${MlflowPort}" in outputs["MlflowTrackingUri"]["Value"]["Fn::Sub"]
