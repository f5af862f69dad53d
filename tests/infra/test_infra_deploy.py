"""Deploy infra/t2v.cfn.yaml into moto (in-process), then point Ray's AWS bootstrap and node_env.py at it.

One module-scoped mock: the stack is created once; nothing leaves the process (no AWS, no moto server).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
from collections.abc import Iterator

import pytest

from .conftest import AWS_CLUSTER, CFN_TEMPLATE, REPO, load_yaml

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Tried to parse.*BucketPolicy"),
    # moto 5.2 has no CloudFormation model for secrets: tests below create them like the stack would.
    pytest.mark.filterwarnings("ignore:Tried to parse.*SecretsManager::Secret"),
]

ADMIN_CIDR = "203.0.113.7/32"
_AWS_ENV_DROP = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
)


@pytest.fixture(scope="module")
def region() -> str:
    return load_yaml(AWS_CLUSTER)["provider"]["region"]


@pytest.fixture(scope="module")
def aws(region, tmp_path_factory) -> Iterator[None]:
    """Fake credentials, no endpoint override (the session's moto server must not see these calls), moto mock."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        for k in _AWS_ENV_DROP:
            mp.delenv(k, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", region)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path_factory.mktemp("aws") / "none"))
        with mock_aws():
            yield


@pytest.fixture(scope="module")
def stack(aws, region) -> dict:
    import boto3

    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    cfn = boto3.client("cloudformation", region_name=region)
    params = {"VpcId": vpc, "SubnetId": subnet, "AdminCidr": ADMIN_CIDR}
    cfn.create_stack(
        StackName="t2v",
        TemplateBody=CFN_TEMPLATE.read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    desc = cfn.describe_stacks(StackName="t2v")["Stacks"][0]
    account = boto3.client("sts", region_name=region).get_caller_identity()["Account"]
    return {
        "status": desc["StackStatus"],
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in desc["Outputs"]},
        "vpc": vpc,
        "account": account,
        "region": region,
    }


def test_stack_creates(stack):
    assert stack["status"] == "CREATE_COMPLETE"


def test_bucket_exists_with_default_name_and_encryption(stack, names, prefix):
    import boto3

    bucket = stack["outputs"]["BucketName"]
    expected = names["bucket_name_pattern"].format(
        prefix=prefix, account_id=stack["account"], region=stack["region"]
    )
    assert bucket == expected
    s3 = boto3.client("s3", region_name=stack["region"])
    s3.head_bucket(Bucket=bucket)
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # moto 5.2 does not apply VersioningConfiguration / PublicAccessBlockConfiguration from CloudFormation;
    # when it does, they must be on (test_infra_template.py checks the template itself).
    versioning = s3.get_bucket_versioning(Bucket=bucket)
    if "Status" in versioning:
        assert versioning["Status"] == "Enabled"
    assert stack["outputs"]["StorageUri"] == names["storage_uri_pattern"].format(bucket=bucket)


def test_instance_profiles_and_roles_exist(stack, names, prefix):
    import boto3

    iam = boto3.client("iam", region_name=stack["region"])
    for profile_key, role_key, output in (
        ("head_instance_profile", "head_role", "HeadInstanceProfileName"),
        ("worker_instance_profile", "worker_role", "WorkerInstanceProfileName"),
    ):
        profile_name = names[profile_key].format(prefix=prefix)
        assert stack["outputs"][output] == profile_name
        profile = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == [names[role_key].format(prefix=prefix)]
        arn_output = output.replace("Name", "Arn")
        assert stack["outputs"][arn_output] == profile["Arn"]
    head_inline = iam.list_role_policies(RoleName=names["head_role"].format(prefix=prefix))["PolicyNames"]
    worker_inline = iam.list_role_policies(RoleName=names["worker_role"].format(prefix=prefix))["PolicyNames"]
    assert head_inline == ["ray-autoscaler"] and worker_inline == []


def test_deployed_data_policy_is_bucket_only(stack, names, prefix):
    import boto3

    iam = boto3.client("iam", region_name=stack["region"])
    arn = f"arn:aws:iam::{stack['account']}:policy/{prefix}-data-bucket-rw"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    bucket_arn = f"arn:aws:s3:::{stack['outputs']['BucketName']}"

    def s3_resources(effect: str) -> set[str]:
        return {
            r
            for st in doc["Statement"]
            if st["Effect"] == effect and any(a.startswith("s3:") for a in st["Action"])
            for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])
        }

    assert s3_resources("Allow") == {bucket_arn, bucket_arn + "/*"}
    assert s3_resources("Deny") == {f"{bucket_arn}/{names['mlflow_backup_prefix']}*"}


def test_ray_nodes_security_group(stack, names, prefix):
    import boto3

    ec2 = boto3.client("ec2", region_name=stack["region"])
    name = names["ray_nodes_security_group"].format(prefix=prefix)
    assert stack["outputs"]["RayNodesSecurityGroupName"] == name
    (sg,) = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [stack["vpc"]]}]
    )["SecurityGroups"]
    cidrs = {r["CidrIp"] for p in sg["IpPermissions"] for r in p["IpRanges"]}
    assert cidrs == {ADMIN_CIDR}
    self_refs = [
        p for p in sg["IpPermissions"] if any(g["GroupId"] == sg["GroupId"] for g in p["UserIdGroupPairs"])
    ]
    assert self_refs and self_refs[0]["IpProtocol"] == "-1"


def test_ssm_parameters_match_outputs(stack, names, prefix):
    import boto3

    ssm = boto3.client("ssm", region_name=stack["region"])
    paths = {k: v.format(prefix=prefix) for k, v in names["ssm_parameters"].items()}
    got = {k: ssm.get_parameter(Name=p)["Parameter"]["Value"] for k, p in paths.items()}
    assert got["bucket"] == stack["outputs"]["BucketName"]
    assert got["storage_uri"] == stack["outputs"]["StorageUri"]
    assert got["mlflow_tracking_uri"] == stack["outputs"]["MlflowTrackingUri"]
    assert re.fullmatch(r"http://\d+\.\d+\.\d+\.\d+:5000", got["mlflow_tracking_uri"])


def test_mlflow_only_from_the_ray_nodes_and_imdsv2(stack, names, prefix):
    import boto3

    ec2 = boto3.client("ec2", region_name=stack["region"])
    (sg,) = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [names["mlflow_security_group"].format(prefix=prefix)]}]
    )["SecurityGroups"]
    assert [r for p in sg["IpPermissions"] for r in p["IpRanges"] + p.get("Ipv6Ranges", [])] == []
    sources = {g["GroupId"] for p in sg["IpPermissions"] for g in p["UserIdGroupPairs"]}
    assert sources == {stack["outputs"]["RayNodesSecurityGroupId"]}
    (lt,) = ec2.describe_launch_templates(
        LaunchTemplateNames=[names["mlflow_launch_template"].format(prefix=prefix)]
    )["LaunchTemplates"]
    (version,) = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])[
        "LaunchTemplateVersions"
    ]
    assert version["LaunchTemplateData"]["MetadataOptions"]["HttpTokens"] == "required"
    assert stack["outputs"]["MlflowInstanceId"] in stack["outputs"]["MlflowUiTunnelCommand"]
    assert "MlflowUiUrl" not in stack["outputs"]


def _node_env():
    spec = importlib.util.spec_from_file_location("t2v_node_env", REPO / "cluster" / "node_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_node_env_exports_the_stack_settings(stack, names, prefix, capsys):
    node_env = _node_env()
    assert (
        node_env.main(["--prefix", prefix, "--region", stack["region"], "--set", "RAY_AUTH_MODE=token"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    assert exported["T2V_BUCKET"] == stack["outputs"]["BucketName"]
    assert exported["T2V_STORAGE_URI"] == stack["outputs"]["StorageUri"]
    assert exported["MLFLOW_TRACKING_URI"] == stack["outputs"]["MlflowTrackingUri"]
    assert exported["AWS_DEFAULT_REGION"] == stack["region"]
    assert exported["RAY_AUTH_MODE"] == "token"
    assert set(names["env"]) <= set(exported)
    assert not any("SECRET" in k or "ACCESS_KEY" in k for k in exported)


def test_node_env_writes_the_mlflow_login_to_a_private_file(
    stack, names, prefix, tmp_path, capsys, monkeypatch
):
    import boto3
    from mlflow.utils.credentials import read_mlflow_creds

    node_env = _node_env()
    args = ["--prefix", prefix, "--region", stack["region"], "--mlflow-credentials", "~/.mlflow/credentials"]
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    secret = names["mlflow_cluster_secret"].format(prefix=prefix)
    assert node_env.main(args) == 2  # no secret yet: says which one, writes nothing
    assert secret in capsys.readouterr().err
    assert not (tmp_path / ".mlflow").exists()

    sm = boto3.client("secretsmanager", region_name=stack["region"])
    login = {"username": names["mlflow_cluster_user"].format(prefix=prefix), "password": "pw%with" + "x" * 30}
    sm.create_secret(Name=secret, SecretString=json.dumps(login))
    try:
        assert node_env.main(args) == 0
    finally:
        sm.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    out = capsys.readouterr().out
    assert login["password"] not in out and "MLFLOW_TRACKING_PASSWORD" not in out
    creds = tmp_path / ".mlflow" / "credentials"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert tuple(read_mlflow_creds()) == (login["username"], login["password"])  # as MLflow's client reads it


def test_node_env_fails_loudly_without_the_stack(stack, capsys):
    assert _node_env().main(["--prefix", "no-such-stack", "--region", stack["region"]]) == 2
    assert "no-such-stack" in capsys.readouterr().err


def test_ray_launcher_bootstrap_reuses_stack_resources(stack, names, prefix, tmp_path, monkeypatch):
    """What `ray up cluster/aws.yaml` resolves against this account, before launching anything."""
    import boto3
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.util import prepare_config

    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes the generated SSH key under ~/.ssh
    ec2 = boto3.client("ec2", region_name=stack["region"])
    before = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}

    config = bootstrap_aws(prepare_config(copy.deepcopy(load_yaml(AWS_CLUSTER))))

    after = ec2.describe_security_groups()["SecurityGroups"]
    assert {g["GroupId"] for g in after} == before, "ray up would create a security group instead of reusing"
    sg_id = stack["outputs"]["RayNodesSecurityGroupId"]
    (sg,) = [g for g in after if g["GroupId"] == sg_id]
    assert {r["CidrIp"] for p in sg["IpPermissions"] for r in p["IpRanges"]} == {ADMIN_CIDR}  # no 0.0.0.0/0
    iam = boto3.client("iam", region_name=stack["region"])
    head = config["head_node_type"]
    for node_type, nt in config["available_node_types"].items():
        nc = nt["node_config"]
        assert nc["SecurityGroupIds"] == [sg_id]
        profile = nc["IamInstanceProfile"]["Name"]
        iam.get_instance_profile(InstanceProfileName=profile)  # exists in the account
        key = "head_instance_profile" if node_type == head else "worker_instance_profile"
        assert profile == names[key].format(prefix=prefix)
    assert os.path.isdir(tmp_path / ".ssh")
