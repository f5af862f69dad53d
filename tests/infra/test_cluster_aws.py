"""cluster/aws.yaml: valid for Ray's own schema and config preparation, autoscales GPU workers from 0."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import jsonschema
import pytest

from .conftest import AWS_CLUSTER, load_yaml


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def _workers(cfg: dict) -> dict:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def test_validates_against_ray_schema(aws_cluster, ray_schema):
    jsonschema.validate(aws_cluster, ray_schema)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["available_node_types"]["gpu.a10g.1x"].update(gpus=1),  # unknown key
        lambda c: c["available_node_types"]["gpu.a10g.1x"]["resources"].update(GPU="1"),  # not an integer
        lambda c: c.update(env={"MLFLOW_TRACKING_URI": "x"}),  # not a launcher key
        lambda c: c["provider"].pop("type"),
    ],
)
def test_schema_check_is_not_vacuous(aws_cluster, ray_schema, mutate):
    broken = copy.deepcopy(aws_cluster)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_schema)


def test_ray_prepares_and_validates_it(aws_cluster):
    """The same path `ray up` takes: merge AWS defaults, fill per-type limits, validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(aws_cluster))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["max_workers"] == 0
    assert prepared["provider"]["type"] == "aws"


def test_gpu_workers_scale_from_zero(aws_cluster):
    workers = _workers(aws_cluster)
    assert workers and all(w["min_workers"] == 0 for w in workers.values())
    gpu = {k: w for k, w in workers.items() if w["resources"].get("GPU", 0) >= 1}
    assert len(gpu) >= 2, "expect a 1-GPU and a multi-GPU node type"
    assert {w["resources"]["GPU"] for w in gpu.values()} >= {1, 4}
    assert all(w["max_workers"] >= 1 for w in gpu.values())
    assert aws_cluster["max_workers"] >= 1
    assert aws_cluster["idle_timeout_minutes"] > 0
    # Terminate (not stop) idle GPU nodes.
    assert aws_cluster["provider"]["cache_stopped_nodes"] is False


def test_gpu_instance_types_match_declared_gpus(aws_cluster):
    known = {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.12xlarge": 4, "g6.xlarge": 1, "g6.12xlarge": 4}
    for name, w in _workers(aws_cluster).items():
        itype = w["node_config"]["InstanceType"]
        if itype in known:
            assert w["resources"]["GPU"] == known[itype], name
        else:
            assert "GPU" not in w["resources"], f"{name}: {itype} has no GPU"


def test_head_runs_no_tasks(aws_cluster):
    head = aws_cluster["available_node_types"][aws_cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert "GPU" not in head["resources"]
    start = " ".join(aws_cluster["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--head" in start


def test_installs_this_package_from_synced_working_tree(aws_cluster):
    mounts = aws_cluster["file_mounts"]
    remote = next(r for r, local in mounts.items() if local in (".", "./"))
    setup = aws_cluster["setup_commands"]
    install = [c for c in setup if " -e " in f" {c} "]
    assert install, "no editable install of the synced repo"
    tokens = shlex.split(install[0])
    assert tokens[tokens.index("-c") + 1] == f"{remote}/constraints.txt"
    assert tokens[tokens.index("-e") + 1] == remote
    # .gitignore'd paths (.venv, t2v-data, outputs) are not synced.
    assert ".gitignore" in aws_cluster["rsync_filter"]


def test_node_env_reads_the_stack_of_this_region(aws_cluster, prefix):
    line = next(c for c in aws_cluster["setup_commands"] if "node_env.py" in c)
    tokens = shlex.split(line.split(">")[0])
    assert tokens[tokens.index("--region") + 1] == aws_cluster["provider"]["region"]
    assert tokens[tokens.index("--prefix") + 1] == prefix
    assert "RAY_AUTH_MODE=token" in tokens
    # node_env.py must exist where the synced tree puts it.
    script = next(t for t in tokens if t.endswith("node_env.py"))
    remote = next(r for r, local in aws_cluster["file_mounts"].items() if local in (".", "./"))
    assert script.startswith(remote + "/")
    assert (AWS_CLUSTER.parents[1] / script[len(remote) + 1 :]).is_file()


def test_token_auth_on_every_node(aws_cluster):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in aws_cluster[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert aws_cluster["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_all_nodes_share_one_image():
    cfg = load_yaml(AWS_CLUSTER)
    images = {t["node_config"]["ImageId"] for t in cfg["available_node_types"].values()}
    assert len(images) == 1
    (image,) = images
    assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/")
    # Every node type mounts its root volume where the Ubuntu DLAMI has it.
    for t in cfg["available_node_types"].values():
        assert t["node_config"]["BlockDeviceMappings"][0]["DeviceName"] == "/dev/sda1"


def test_every_node_requires_imdsv2(aws_cluster):
    for name, nt in aws_cluster["available_node_types"].items():
        meta = nt["node_config"].get("MetadataOptions", {})
        assert meta.get("HttpTokens") == "required" and meta.get("HttpEndpoint") == "enabled", name
        assert meta.get("HttpPutResponseHopLimit") in (1, 2), name  # 2: the optional docker mode


def test_node_configs_are_valid_run_instances_arguments(aws_cluster):
    """Ray passes node_config to EC2 RunInstances as is: botocore's own schema for it accepts every one."""
    import botocore.session
    from botocore.validate import validate_parameters

    shape = (
        botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    )
    for nt in aws_cluster["available_node_types"].values():
        validate_parameters({**nt["node_config"], "MinCount": 1, "MaxCount": 1}, shape)
        broken = copy.deepcopy(nt["node_config"])
        broken["MetadataOptions"]["HttpPutResponseHopLimit"] = "2"  # a string: rejected, so the check bites
        with pytest.raises(Exception, match="HttpPutResponseHopLimit"):
            validate_parameters({**broken, "MinCount": 1, "MaxCount": 1}, shape)


def test_nodes_get_the_mlflow_login_as_a_file(aws_cluster, names):
    line = next(c for c in aws_cluster["setup_commands"] if "node_env.py" in c)
    tokens = shlex.split(line.split(">")[0])
    assert tokens[tokens.index("--mlflow-credentials") + 1] == names["mlflow_credentials_file"]
