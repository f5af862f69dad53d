"""cluster/kuberay/: RayCluster + RayJob parse, have the fields KubeRay needs, and agree with each other."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from .conftest import KUBERAY, REPO, constraint_version, load_all, load_yaml


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (doc,) = load_all(KUBERAY / "raycluster.yaml")
    return doc


@pytest.fixture(scope="module")
def rayjob() -> dict:
    (doc,) = load_all(KUBERAY / "rayjob.yaml")
    return doc


@pytest.fixture(scope="module")
def common() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in load_all(KUBERAY / "common.yaml")}


def _pod_specs(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]
    ]


def test_kinds_and_api_version(raycluster, rayjob):
    assert (raycluster["apiVersion"], raycluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    for doc in (raycluster, rayjob):
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"]


def test_raycluster_autoscales_gpu_workers_from_zero(raycluster):
    spec = raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert "rayStartParams" in spec["headGroupSpec"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0
        assert g["maxReplicas"] >= 1
        (container,) = g["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert requests.get("nvidia.com/gpu") == limits["nvidia.com/gpu"]  # extended resources: equal
    # The head takes no Ray tasks, like the AWS launcher config.
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_ray_version_and_token_auth(raycluster):
    spec = raycluster["spec"]
    assert spec["rayVersion"] == constraint_version("ray")
    assert spec["authOptions"]["mode"] == "token"


def test_rayjob_runs_the_pipeline(rayjob):
    spec = rayjob["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "jobs/pipeline.py"]
    config = argv[argv.index("--config") + 1]
    assert re.fullmatch(r"jobs/configs/[a-z0-9_-]+\.yaml", config)
    if (REPO / "jobs" / "pipeline.py").exists():
        assert (REPO / config).is_file(), f"{config} referenced by rayjob.yaml is missing"
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/app"


def test_rayjob_cluster_spec_equals_raycluster(rayjob, raycluster):
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


def test_pods_use_the_irsa_service_account_and_env(raycluster, common, names):
    ns = names["k8s_namespace"]
    sa = common[("ServiceAccount", names["k8s_service_account"])]
    assert sa["metadata"]["namespace"] == ns == raycluster["metadata"]["namespace"]
    role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(":role/" + names["irsa_role"].format(prefix=names["name_prefix"]))
    for pod in _pod_specs(raycluster["spec"]):
        assert pod["serviceAccountName"] == names["k8s_service_account"]
        for c in pod["containers"]:
            refs = {e["configMapRef"]["name"] for e in c["envFrom"]}
            assert all(("ConfigMap", r) in common for r in refs)
    env = common[("ConfigMap", "t2v-env")]["data"]
    assert set(names["env"]) <= set(env)


def test_images_built_from_dockerfile(raycluster):
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+rayproject/ray:(\S+)", dockerfile, re.M).group(1)
    ray_version, py_tag = re.fullmatch(r"(\d+\.\d+\.\d+)-(py\d+)-gpu", base).groups()
    assert ray_version == constraint_version("ray")
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.M).group(1)
    requires = re.search(r'^requires-python\s*=\s*">=(\d+)\.(\d+)"', pyproject, re.M).groups()
    assert py_tag == "py" + "".join(requires)
    for pod in _pod_specs(raycluster["spec"]):
        for c in pod["containers"]:
            assert c["image"].endswith(f"/t2v-ray:{version}")
    # Everything the package build needs is copied into the image.
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "t2v_ray", "jobs"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", dockerfile, re.M), needed


def test_manifests_are_plain_yaml_for_kubectl():
    for path in KUBERAY.glob("*.yaml"):
        for doc in load_all(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path.name
    assert load_yaml(KUBERAY / "raycluster.yaml")["metadata"]["name"] == "t2v"
