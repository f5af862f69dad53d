"""The MLflow server of infra/t2v.cfn.yaml: its UserData, and the scripts it writes run here for real.

auth.py (basic-auth users from Secrets Manager) runs against moto's Secrets Manager and MLflow's own auth store;
s3db.py (DB backups) against moto S3. Both are taken verbatim from the template's UserData heredocs.
"""

from __future__ import annotations

import configparser
import json
import re
import sqlite3
import sys
import types
from pathlib import Path

import pytest

from .conftest import CFN_TEMPLATE, constraint_version

REGION = "us-west-2"


def _user_data(cfn) -> str:
    return cfn["Resources"]["MlflowServer"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]


def _heredoc(cfn, target: str) -> str:
    """Body of ``cat > target <<...`` in the UserData (CloudFormation substitutes ``${...}`` only)."""
    m = re.search(rf"^cat > {re.escape(target)} <<'?EOS'?\n(.*?)^EOS$", _user_data(cfn), re.S | re.M)
    assert m, f"UserData writes no {target}"
    return m[1]


def _script(cfn, name: str) -> types.ModuleType:
    code = _heredoc(cfn, f"/opt/mlflow/{name}")
    assert "${" not in code, f"{name} would be changed by Fn::Sub"
    mod = types.ModuleType(name.removesuffix(".py"))
    exec(compile(code, name, "exec"), mod.__dict__)  # noqa: S102 - our own template's script
    return mod


def _server_env(cfn, prefix: str) -> dict[str, str]:
    """/etc/default/mlflow as the instance gets it (NamePrefix substituted)."""
    body = _heredoc(cfn, "/etc/default/mlflow")
    return dict(line.split("=", 1) for line in body.replace("${NamePrefix}", prefix).splitlines())


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws

    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


@pytest.fixture
def auth_store_importable(monkeypatch):
    """mlflow.server.auth imports flask_wtf (mlflow[auth], installed on the server) for its Flask app's CSRF.

    The user store tested here does not use it; stand in for it when the dev env lacks Flask-WTF.
    """
    try:
        import flask_wtf.csrf  # noqa: F401
    except ImportError:
        csrf = types.ModuleType("flask_wtf.csrf")
        csrf.CSRFProtect = type("CSRFProtect", (), {})
        pkg = types.ModuleType("flask_wtf")
        pkg.csrf = csrf
        monkeypatch.setitem(sys.modules, "flask_wtf", pkg)
        monkeypatch.setitem(sys.modules, "flask_wtf.csrf", csrf)


def test_server_runs_the_basic_auth_app(cfn):
    user_data = _user_data(cfn)
    assert 'mlflow[auth]==${MlflowVersion}"' in user_data  # the auth extra (Flask-WTF)
    assert cfn["Parameters"]["MlflowVersion"]["Default"] == constraint_version("mlflow")
    run = _heredoc(cfn, "/opt/mlflow/run.sh")
    (server,) = [line for line in run.splitlines() if "mlflow server" in line]
    assert server.startswith("exec ") and "--app-name basic-auth" in server
    # restore the DBs, then sync the users, then start; the CSRF key is generated, not written down.
    order = [
        run.index(s) for s in ("s3db.py restore", "auth.py", "MLFLOW_FLASK_SERVER_SECRET_KEY=$(", "exec ")
    ]
    assert order == sorted(order)
    assert "MLFLOW_AUTH_CONFIG_PATH" in _heredoc(cfn, "/etc/default/mlflow")


def test_no_password_in_the_template(cfn, names, prefix):
    secrets = {k: r for k, r in cfn["Resources"].items() if r["Type"] == "AWS::SecretsManager::Secret"}
    by_name = {r["Properties"]["Name"]["Fn::Sub"]: r["Properties"] for r in secrets.values()}
    assert set(by_name) == {
        names[k].replace("{prefix}", "${NamePrefix}")
        for k in ("mlflow_admin_secret", "mlflow_cluster_secret")
    }
    for props in by_name.values():
        assert "SecretString" not in props
        gen = props["GenerateSecretString"]
        assert gen["GenerateStringKey"] == "password" and gen["PasswordLength"] >= 32
        assert gen["ExcludePunctuation"] is True  # no "%" for configparser, no quoting trouble
    env = _server_env(cfn, prefix)
    assert env["T2V_MLFLOW_ADMIN_SECRET"] == names["mlflow_admin_secret"].format(prefix=prefix)
    assert env["T2V_MLFLOW_CLUSTER_SECRET"] == names["mlflow_cluster_secret"].format(prefix=prefix)
    text = CFN_TEMPLATE.read_text()
    for leak in (
        r"admin_password",
        r"MLFLOW_AUTH_ADMIN_PASSWORD",
        r"MLFLOW_TRACKING_PASSWORD",
        r"^\s*SecretString:",
    ):
        assert not re.search(leak, text, re.M), leak


def test_server_serves_artifacts_from_the_bucket(cfn):
    user_data = _user_data(cfn)
    assert "--artifacts-destination" in user_data and 's3://$T2V_BUCKET/mlflow"' in user_data
    env = _server_env(cfn, "t2v")
    assert env["T2V_BUCKET"] == "${DataBucket}"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "--allowed-hosts" in user_data  # MLflow 3 rejects unknown Host headers otherwise
    outputs = cfn["Outputs"]
    assert "${MlflowServer.PrivateIp}:${MlflowPort}" in outputs["MlflowTrackingUri"]["Value"]["Fn::Sub"]
    assert "AWS-StartPortForwardingSession" in outputs["MlflowUiTunnelCommand"]["Value"]["Fn::Sub"]


def _put_login(sm, name: str, username: str, password: str) -> None:
    value = json.dumps({"username": username, "password": password})
    try:
        sm.put_secret_value(SecretId=name, SecretString=value)
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(Name=name, SecretString=value)


@pytest.mark.integration  # moto, MLflow's auth store
def test_auth_setup_syncs_both_logins_from_secrets(cfn, names, prefix, tmp_path, aws, auth_store_importable):
    import boto3
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    env = {**_server_env(cfn, prefix), "T2V_MLFLOW_DIR": str(tmp_path)}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "basic_auth.ini")
    sm = boto3.client("secretsmanager", region_name=REGION)
    cluster_user = names["mlflow_cluster_user"].format(prefix=prefix)
    _put_login(sm, env["T2V_MLFLOW_ADMIN_SECRET"], "admin", "a" * 40)
    _put_login(sm, env["T2V_MLFLOW_CLUSTER_SECRET"], cluster_user, "r" * 40)
    auth = _script(cfn, "auth.py")
    auth.main(sm, env)

    ini = tmp_path / "basic_auth.ini"
    assert ini.stat().st_mode & 0o777 == 0o600
    assert "a" * 40 not in ini.read_text() and "r" * 40 not in ini.read_text()
    cfg = configparser.ConfigParser()
    cfg.read(ini)
    store = SqlAlchemyStore()
    store.init_db(cfg["mlflow"]["database_uri"])
    assert cfg["mlflow"]["database_uri"] == f"sqlite:///{tmp_path}/basic_auth.db"
    assert cfg["mlflow"]["admin_username"] == "admin" and cfg["mlflow"]["default_permission"] == "READ"
    assert store.authenticate_user("admin", "a" * 40) and store.get_user("admin").is_admin
    assert store.authenticate_user(cluster_user, "r" * 40) and not store.get_user(cluster_user).is_admin

    # A rotated secret takes effect at the next start; the old password stops working.
    _put_login(sm, env["T2V_MLFLOW_CLUSTER_SECRET"], cluster_user, "s" * 40)
    auth.main(sm, env)
    assert store.authenticate_user(cluster_user, "s" * 40)
    assert not store.authenticate_user(cluster_user, "r" * 40)


@pytest.mark.integration  # moto, MLflow's auth store
def test_auth_setup_refuses_a_weak_secret(cfn, prefix, tmp_path, aws, auth_store_importable):
    import boto3

    env = {**_server_env(cfn, prefix), "T2V_MLFLOW_DIR": str(tmp_path)}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "basic_auth.ini")
    sm = boto3.client("secretsmanager", region_name=REGION)
    _put_login(sm, env["T2V_MLFLOW_ADMIN_SECRET"], "admin", "short")
    _put_login(sm, env["T2V_MLFLOW_CLUSTER_SECRET"], "t2v-ray", "r" * 40)
    with pytest.raises(SystemExit, match=re.escape(env["T2V_MLFLOW_ADMIN_SECRET"])):
        _script(cfn, "auth.py").main(sm, env)
    assert not (tmp_path / "basic_auth.db").exists()


def _db(path: Path, value: str) -> None:
    with sqlite3.connect(path) as con:
        con.execute("create table t (v text)")
        con.execute("insert into t values (?)", (value,))


def _read(path: Path) -> str:
    with sqlite3.connect(path) as con:
        return con.execute("select v from t").fetchone()[0]


@pytest.mark.integration  # moto, MLflow's auth store
def test_backup_round_trip_keeps_runs_and_users(cfn, names, tmp_path, aws):
    import boto3

    s3db = _script(cfn, "s3db.py")
    assert names["mlflow_backup_prefix"] == s3db.PREFIX
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="t2v-backup-test", CreateBucketConfiguration={"LocationConstraint": REGION})
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    s3db.restore(s3, "t2v-backup-test", str(old))  # first boot: no backup yet, nothing restored, no error
    assert not list(old.iterdir())
    _db(old / "mlflow.db", "runs")
    _db(old / "basic_auth.db", "users")
    s3db.backup(s3, "t2v-backup-test", str(old))
    s3db.restore(s3, "t2v-backup-test", str(new))
    assert _read(new / "mlflow.db") == "runs" and _read(new / "basic_auth.db") == "users"


class _FailingS3:
    def __init__(self, error: Exception):
        self.error = error

    def download_file(self, *args):
        raise self.error


@pytest.mark.parametrize("kind", ["unreachable", "denied"])
def test_restore_fails_loudly_when_s3_errs(cfn, tmp_path, kind):
    """Starting empty because S3 failed would later back the empty DB up over the good one."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    error = {
        "unreachable": EndpointConnectionError(endpoint_url="https://s3.us-west-2.amazonaws.com"),
        "denied": ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject"),
    }[kind]
    with pytest.raises(type(error)):
        _script(cfn, "s3db.py").restore(_FailingS3(error), "b", str(tmp_path))
    assert not list(tmp_path.iterdir())
