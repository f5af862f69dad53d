"""infra/t2v.cfn.yaml without AWS: cfn-lint, bucket hardening, least-privilege IAM (checked on the template).

IAM checks evaluate the roles' policies on concrete requests (tests/infra/iam_eval.py) instead of comparing
statement text, so a broader statement elsewhere cannot hide behind an unchanged one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CFN_TEMPLATE, REPO
from .iam_eval import ACCOUNT, REGION, Values, allowed, role_statements

CUSTOM_RULES = REPO / "infra" / "cfn-lint.rules"
INSTANCE = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"


def _statements(policy_doc: dict) -> list[dict]:
    st = policy_doc["Statement"]
    return st if isinstance(st, list) else [st]


def _as_list(x):
    return x if isinstance(x, list) else [x]


def _cfn_lint(template: Path) -> subprocess.CompletedProcess:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    exe = [str(cfn_lint)] if cfn_lint.exists() else [sys.executable, "-m", "cfnlint"]
    args = [str(template), "--include-checks", "I", "--custom-rules", str(CUSTOM_RULES)]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=120)


def test_cfn_lint_passes():
    """cfn-lint's own rules (informational ones too) and ours in infra/cfn-lint.rules."""
    proc = _cfn_lint(CFN_TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


_LT = (
    "      LaunchTemplate:\n        LaunchTemplateId: !Ref MlflowLaunchTemplate\n"
    "        Version: !GetAtt MlflowLaunchTemplate.LatestVersionNumber\n"
)
_GENERATED = (
    '      GenerateSecretString:\n        SecretStringTemplate: \'{"username": "admin"}\'\n'
    "        GenerateStringKey: password\n        PasswordLength: 40\n        ExcludePunctuation: true\n"
)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (" HttpTokens: required", " HttpTokens: optional", "HttpTokens must be required"),
        (_LT, "", "IMDSv2 settings from a launch template"),
        ("CidrIp: !Ref AdminCidr", "CidrIp: 0.0.0.0/0", "no ingress from the whole internet"),
        (
            _GENERATED,
            '      SecretString: \'{"password": "hunter2hunter2"}\'\n',
            "never written in the template",
        ),
    ],
    ids=["imds-optional", "no-launch-template", "world-ingress", "literal-secret"],
)
def test_custom_cfn_lint_rules_catch_regressions(tmp_path, old, new, message):
    """infra/cfn-lint.rules is not vacuous: each rule fails a template that breaks it."""
    text = CFN_TEMPLATE.read_text()
    assert text.count(old) == 1, old
    mutated = tmp_path / "t2v.cfn.yaml"
    mutated.write_text(text.replace(old, new))
    proc = _cfn_lint(mutated)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout + proc.stderr


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
        actions = _as_list(st["Action"])
        if st["Effect"] == "Deny":  # only the MLflow backup guard (test_only_mlflow_touches_its_backup)
            assert st["Resource"] == {"Fn::Sub": "${DataBucket.Arn}/mlflow-backup/*"}, st
            continue
        assert st["Effect"] == "Allow"
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
    assert props["ManagedPolicyArns"] == [{"Ref": "DataBucketAccessPolicy"}, {"Ref": "MlflowClientPolicy"}]
    assert "Policies" not in props
    trust = _statements(props["AssumeRolePolicyDocument"])
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    sts = role_statements(cfn, "RayWorkerRole", Values(cfn))
    assert not any(a.startswith(("ec2:", "iam:")) for st in sts for a in _as_list(st["Action"]))


def test_head_role_can_autoscale_but_only_pass_the_worker_role(cfn):
    props = cfn["Resources"]["RayHeadRole"]["Properties"]
    assert {"Ref": "DataBucketAccessPolicy"} in props["ManagedPolicyArns"]
    (policy,) = props["Policies"]
    sts = _statements(policy["PolicyDocument"])
    actions = {a for st in sts for a in _as_list(st["Action"])}
    for needed in ("ec2:RunInstances", "ec2:TerminateInstances", "ec2:DescribeInstances", "ec2:CreateTags"):
        assert needed in actions, needed
    (pass_role,) = [st for st in sts if st["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": ["RayWorkerRole", "Arn"]}
    # No S3, IAM admin or wildcard actions beyond the data policy.
    assert not any(a.startswith("s3:") or a in ("*", "ec2:*", "iam:*") for a in actions)
    assert {a for a in actions if a.startswith("iam:")} == {"iam:PassRole"}


@pytest.fixture(scope="module")
def head(cfn) -> list[dict]:
    return role_statements(cfn, "RayHeadRole", Values(cfn))


def test_cluster_tag_is_rays_and_the_cluster_name_is_aws_yamls(cfn, names, aws_cluster):
    from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

    assert names["ray_cluster_tag"] == TAG_RAY_CLUSTER_NAME
    assert cfn["Parameters"]["RayClusterName"]["Default"] == names["ray_cluster_name"]
    assert aws_cluster["cluster_name"] == names["ray_cluster_name"]
    pattern = cfn["Parameters"]["RayClusterName"]["AllowedPattern"]
    assert re.fullmatch(pattern, names["ray_cluster_name"])


def _tagging(cluster: str | None = None, resource_cluster: str | None = None, keys=("ray-cluster-name",)):
    """CreateTags condition keys: the tags requested, the instance's current cluster tag, the launch call."""
    ctx: dict = {"aws:TagKeys": list(keys)}
    if cluster is not None:
        ctx["aws:RequestTag/ray-cluster-name"] = cluster
    if resource_cluster is not None:
        ctx["ec2:ResourceTag/ray-cluster-name"] = resource_cluster
    return ctx


def test_head_tags_instances_only_at_its_own_launches(head):
    at_launch = {"ec2:CreateAction": "RunInstances"}
    assert allowed(head, "ec2:CreateTags", INSTANCE, **at_launch, **_tagging("t2v"))
    assert not allowed(head, "ec2:CreateTags", INSTANCE, **at_launch, **_tagging("other"))
    assert not allowed(head, "ec2:CreateTags", INSTANCE, **at_launch, **_tagging(None, keys=("Name",)))
    # An existing instance of nobody's / another cluster cannot be made "ours" (then terminated).
    assert not allowed(head, "ec2:CreateTags", INSTANCE, **_tagging("t2v"))
    assert not allowed(head, "ec2:CreateTags", INSTANCE, **_tagging("t2v", resource_cluster="other"))
    # Ray's status updates on its own nodes still work; their cluster tag cannot change.
    status = _tagging(resource_cluster="t2v", keys=("ray-node-status",))
    assert allowed(head, "ec2:CreateTags", INSTANCE, **status)
    assert not allowed(head, "ec2:CreateTags", INSTANCE, **_tagging("other", resource_cluster="t2v"))
    volume = INSTANCE.replace("instance/i-", "volume/vol-")
    assert not allowed(head, "ec2:CreateTags", volume, **at_launch, **_tagging("t2v"))


@pytest.mark.parametrize("action", ["ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"])
def test_head_stops_and_terminates_only_its_cluster(head, action):
    assert allowed(head, action, INSTANCE, **{"ec2:ResourceTag/ray-cluster-name": "t2v"})
    assert not allowed(head, action, INSTANCE, **{"ec2:ResourceTag/ray-cluster-name": "other"})
    assert not allowed(head, action, INSTANCE)


def test_head_launches_only_cluster_tagged_imdsv2_instances_in_the_ray_group(head):
    ok = {"aws:RequestTag/ray-cluster-name": "t2v", "ec2:MetadataHttpTokens": "required"}
    assert allowed(head, "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*", **ok)
    for bad in (
        {**ok, "aws:RequestTag/ray-cluster-name": "other"},
        {**ok, "ec2:MetadataHttpTokens": "optional"},
    ):
        assert not allowed(head, "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*", **bad)
    assert not allowed(head, "ec2:RunInstances", f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/*", **ok)
    sg = f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/"
    assert allowed(head, "ec2:RunInstances", sg + "sg-0ray")
    assert not allowed(head, "ec2:RunInstances", sg + "sg-0mlflow")


def test_head_can_launch_every_worker_type_of_aws_yaml(head, aws_cluster):
    """The RunInstances conditions match what Ray sends for cluster/aws.yaml's node configs."""
    for name, nt in aws_cluster["available_node_types"].items():
        tokens = nt["node_config"].get("MetadataOptions", {}).get("HttpTokens", "optional")
        ctx = {
            "aws:RequestTag/ray-cluster-name": aws_cluster["cluster_name"],
            "ec2:MetadataHttpTokens": tokens,
        }
        assert allowed(head, "ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*", **ctx), name


def _backup_key(name: str = "mlflow.db") -> str:
    return f"arn:aws:s3:::t2v-data-{ACCOUNT}-{REGION}/mlflow-backup/{name}"


@pytest.mark.parametrize("role", ["RayWorkerRole", "RayHeadRole", "RayIrsaRole"])
def test_only_mlflow_touches_its_backup(cfn, role):
    sts = role_statements(cfn, role, Values(cfn))
    data = f"arn:aws:s3:::t2v-data-{ACCOUNT}-{REGION}/t2v/lib/tasks.parquet"
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
        assert allowed(sts, action, data), action  # data access as before
        for db in ("mlflow.db", "basic_auth.db"):
            assert not allowed(sts, action, _backup_key(db)), (role, action, db)
    mlflow = role_statements(cfn, "MlflowRole", Values(cfn))
    for action in ("s3:PutObject", "s3:GetObject"):
        assert allowed(mlflow, action, _backup_key("basic_auth.db"))


def _secret_arn(name: str, suffix: str = "-AbC123") -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}{suffix}"


def test_nodes_read_only_their_mlflow_login(cfn, names, prefix):
    admin = _secret_arn(names["mlflow_admin_secret"].format(prefix=prefix))
    cluster = _secret_arn(names["mlflow_cluster_secret"].format(prefix=prefix))
    for role in ("RayWorkerRole", "RayHeadRole"):
        sts = role_statements(cfn, role, Values(cfn))
        assert allowed(sts, "secretsmanager:GetSecretValue", cluster), role
        assert not allowed(sts, "secretsmanager:GetSecretValue", admin), role
        longer = _secret_arn(names["mlflow_cluster_secret"].format(prefix=prefix), "-x-AbC123")
        assert not allowed(sts, "secretsmanager:GetSecretValue", longer), role
        assert not allowed(sts, "secretsmanager:PutSecretValue", cluster), role
    mlflow = role_statements(cfn, "MlflowRole", Values(cfn))
    assert allowed(mlflow, "secretsmanager:GetSecretValue", admin)
    assert allowed(mlflow, "secretsmanager:GetSecretValue", cluster)


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


def _ingress_rules(cfn) -> list[tuple[str, dict]]:
    """(group logical id, rule) for inline and standalone ingress rules."""
    res = cfn["Resources"]
    rules = [
        (name, rule)
        for name, r in res.items()
        if r["Type"] == "AWS::EC2::SecurityGroup"
        for rule in r["Properties"].get("SecurityGroupIngress", [])
    ]
    rules += [
        (r["Properties"]["GroupId"]["Fn::GetAtt"][0], r["Properties"])
        for r in res.values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    return rules


@pytest.mark.parametrize(
    "cidr",
    ["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8", "1.2.3.0/15", "1.2.3.4/33", "256.1.1.1/32", ""],
)
def test_admin_cidr_cannot_be_the_internet(cfn, cidr):
    assert not re.fullmatch(cfn["Parameters"]["AdminCidr"]["AllowedPattern"], cidr)


@pytest.mark.parametrize("cidr", ["203.0.113.7/32", "10.20.0.0/16", "192.168.1.0/24"])
def test_admin_cidr_accepts_narrow_ranges(cfn, cidr):
    assert re.fullmatch(cfn["Parameters"]["AdminCidr"]["AllowedPattern"], cidr)


def test_security_groups_never_open_to_the_world(cfn):
    """The only CIDR in any ingress rule is AdminCidr (SSH to the Ray nodes); nothing IPv6 or prefix-list."""
    for group, rule in _ingress_rules(cfn):
        assert rule.get("CidrIp") in (None, {"Ref": "AdminCidr"}), (group, rule)
        assert not {"CidrIpv6", "SourcePrefixListId"} & set(rule), (group, rule)
        if "CidrIp" in rule:
            assert group == "RayNodesSecurityGroup" and rule["FromPort"] == rule["ToPort"] == 22, rule


def test_mlflow_reachable_only_from_the_ray_nodes(cfn):
    rules = [rule for group, rule in _ingress_rules(cfn) if group == "MlflowSecurityGroup"]
    assert rules
    for rule in rules:
        assert set(rule) <= {"Description", "IpProtocol", "FromPort", "ToPort", "SourceSecurityGroupId"}, rule
        assert rule["SourceSecurityGroupId"] == {"Fn::GetAtt": ["RayNodesSecurityGroup", "GroupId"]}
        assert rule["FromPort"] == rule["ToPort"] == {"Ref": "MlflowPort"}


def test_every_instance_requires_imdsv2(cfn):
    res = cfn["Resources"]
    instances = [r for r in res.values() if r["Type"] == "AWS::EC2::Instance"]
    assert instances
    for inst in instances:
        lt = inst["Properties"]["LaunchTemplate"]
        (name,) = {lt["LaunchTemplateId"]["Ref"]}
        assert lt["Version"] == {"Fn::GetAtt": [name, "LatestVersionNumber"]}
        assert "MetadataOptions" not in inst["Properties"]  # one place that says it
        meta = res[name]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
        assert meta["HttpTokens"] == "required" and meta["HttpEndpoint"] == "enabled"
        assert meta["HttpPutResponseHopLimit"] == 1
