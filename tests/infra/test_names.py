"""infra/names.yaml is the one list of shared names: the template, cluster configs, scripts and docs must match it."""

from __future__ import annotations

import importlib.util
import json
import re

from .conftest import KUBERAY, REPO, load_all


def _sub(pattern: str) -> str:
    """names.yaml pattern -> the CloudFormation Fn::Sub string that builds it."""
    return pattern.replace("{prefix}", "${NamePrefix}")


def _docs(pattern: str, prefix: str) -> str:
    """names.yaml pattern -> how the docs write it: t2v-data-<account_id>-<region>."""
    return re.sub(r"\{(\w+)\}", r"<\1>", pattern.replace("{prefix}", prefix))


def test_template_builds_the_names(cfn, names):
    res = cfn["Resources"]
    expected = {
        ("RayHeadRole", "RoleName"): "head_role",
        ("RayHeadInstanceProfile", "InstanceProfileName"): "head_instance_profile",
        ("RayWorkerRole", "RoleName"): "worker_role",
        ("RayWorkerInstanceProfile", "InstanceProfileName"): "worker_instance_profile",
        ("MlflowRole", "RoleName"): "mlflow_role",
        ("RayIrsaRole", "RoleName"): "irsa_role",
        ("RayNodesSecurityGroup", "GroupName"): "ray_nodes_security_group",
        ("MlflowSecurityGroup", "GroupName"): "mlflow_security_group",
        ("MlflowLaunchTemplate", "LaunchTemplateName"): "mlflow_launch_template",
        ("MlflowAdminSecret", "Name"): "mlflow_admin_secret",
        ("MlflowClusterSecret", "Name"): "mlflow_cluster_secret",
        ("BucketParameter", "Name"): None,
    }
    for (logical, prop), key in expected.items():
        if key is None:
            continue
        assert res[logical]["Properties"][prop] == {"Fn::Sub": _sub(names[key])}, logical
    bucket_name = res["DataBucket"]["Properties"]["BucketName"]["Fn::If"]
    assert bucket_name[1] == {
        "Fn::Sub": names["bucket_name_pattern"].format(
            prefix="${NamePrefix}", account_id="${AWS::AccountId}", region="${AWS::Region}"
        )
    }
    ssm = {res[r]["Properties"]["Name"]["Fn::Sub"] for r in res if res[r]["Type"] == "AWS::SSM::Parameter"}
    assert ssm == {_sub(p) for p in names["ssm_parameters"].values()}
    assert cfn["Parameters"]["NamePrefix"]["Default"] == names["name_prefix"]
    assert cfn["Parameters"]["MlflowPort"]["Default"] == names["mlflow_port"]
    assert cfn["Parameters"]["K8sNamespace"]["Default"] == names["k8s_namespace"]
    assert cfn["Parameters"]["K8sServiceAccount"]["Default"] == names["k8s_service_account"]


def test_cluster_names_in_template(cfn, names):
    """Cluster name, its tag key, the nodes' MLflow user and the backup prefix the policies protect."""
    text = (REPO / "infra" / "t2v.cfn.yaml").read_text()
    assert cfn["Parameters"]["RayClusterName"]["Default"] == names["ray_cluster_name"]
    tag = names["ray_cluster_tag"]
    tag_keys = set(re.findall(r"(?:RequestTag|ResourceTag)/([\w-]+)", text))
    assert tag_keys == {tag}
    gen = cfn["Resources"]["MlflowClusterSecret"]["Properties"]["GenerateSecretString"]
    user = json.loads(gen["SecretStringTemplate"]["Fn::Sub"])["username"]
    assert user == _sub(names["mlflow_cluster_user"])
    backup = names["mlflow_backup_prefix"]
    assert "${DataBucket.Arn}/" + backup + "*" in text
    for key in ("mlflow_admin_secret", "mlflow_cluster_secret"):
        assert f"secret:{_sub(names[key])}-??????" in text, key  # IAM grants by name


def test_storage_prefixes_in_template(cfn, names):
    text = (REPO / "infra" / "t2v.cfn.yaml").read_text()
    assert "s3://${DataBucket}/" + names["storage_prefix"] in text
    assert "/" + names["mlflow_artifacts_prefix"].rstrip("/") in text
    assert names["storage_uri_pattern"] == "s3://{bucket}/" + names["storage_prefix"]


def test_aws_cluster_references_the_stack_names(aws_cluster, names, prefix):
    head = aws_cluster["head_node_type"]
    for node_type, nt in aws_cluster["available_node_types"].items():
        key = "head_instance_profile" if node_type == head else "worker_instance_profile"
        assert nt["node_config"]["IamInstanceProfile"] == {"Name": names[key].format(prefix=prefix)}, (
            node_type
        )
    assert aws_cluster["provider"]["security_group"]["GroupName"] == names["ray_nodes_security_group"].format(
        prefix=prefix
    )


def test_node_env_maps_the_ssm_parameters(names):
    spec = importlib.util.spec_from_file_location("t2v_node_env", REPO / "cluster" / "node_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # names.yaml: env var -> ssm key; ssm key -> "/{prefix}/<param>"; node_env: <param> -> env var
    from_names = {
        names["ssm_parameters"][ssm_key].removeprefix("/{prefix}/"): var
        for var, ssm_key in names["env"].items()
    }
    assert from_names == mod.PARAMETERS
    assert names["mlflow_cluster_secret"] == "{prefix}/" + mod.MLFLOW_SECRET


def test_kuberay_env_matches_patterns(names, prefix):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(KUBERAY / "common.yaml")}
    env = docs[("ConfigMap", "t2v-env")]["data"]
    bucket = env["T2V_BUCKET"]
    bucket_re = re.escape(names["bucket_name_pattern"]).replace(r"\{prefix\}", re.escape(prefix))
    bucket_re = re.sub(r"\\\{\w+\\\}", r"[A-Za-z0-9_-]+", bucket_re)
    assert re.fullmatch(bucket_re, bucket), bucket
    assert env["T2V_STORAGE_URI"] == names["storage_uri_pattern"].format(bucket=bucket)
    assert env["MLFLOW_TRACKING_URI"].endswith(f":{names['mlflow_port']}")
    assert ("Namespace", names["k8s_namespace"]) in docs


def test_docs_use_the_bucket_pattern(names, prefix):
    shown = _docs(names["bucket_name_pattern"], prefix)
    assert shown == "t2v-data-<account_id>-<region>"
    for doc in ("infra/README.md", "cluster/README.md"):
        assert shown in (REPO / doc).read_text(), doc
    readme = (REPO / "cluster" / "README.md").read_text()
    for key in ("head_instance_profile", "worker_instance_profile", "ray_nodes_security_group"):
        assert names[key].format(prefix=prefix) in readme + (REPO / "infra" / "README.md").read_text(), key


def test_jobs_configs_use_the_storage_prefix(names):
    """Any config that points at the data bucket keeps its files under the storage prefix."""
    configs = sorted((REPO / "jobs" / "configs").glob("*.yaml"))
    bucket_start = "s3://" + names["bucket_name_pattern"].split("{account_id}")[0].format(
        prefix=names["name_prefix"]
    )
    for path in configs:
        for uri in re.findall(r"s3://[^\s'\"]+", path.read_text()):
            if uri.startswith(bucket_start):
                _bucket, _, key = uri.removeprefix("s3://").partition("/")
                assert key.startswith(names["storage_prefix"]), f"{path.name}: {uri}"


def test_env_vars_in_jobs_configs_are_set_on_cluster_nodes(names):
    """Configs like ``storage: ${T2V_STORAGE_URI}paper`` only work if every node exports that variable."""
    provided = set(names["env"]) | {"AWS_DEFAULT_REGION"}
    assert names["storage_uri_pattern"].endswith("/"), "configs append a sub-path directly"
    for path in sorted((REPO / "jobs" / "configs").glob("*.yaml")):
        for var in re.findall(r"\$\{?(T2V_[A-Z0-9_]+|MLFLOW_[A-Z0-9_]+)", path.read_text()):
            assert var in provided, f"{path.name} uses ${var}, which cluster nodes do not set"
