"""Write the environment a t2v Ray node needs, read from the SSM parameters that infra/t2v.cfn.yaml creates.

Runs on every node of cluster/aws.yaml during setup (instance role credentials, region from the launcher
config), before ``ray start``, so Ray workers and job drivers inherit the variables::

    python cluster/node_env.py --prefix t2v --region us-west-2 --set RAY_AUTH_MODE=token \\
        --mlflow-credentials ~/.mlflow/credentials > ~/.t2v_env

Output is ``export NAME=value`` lines (shell-quoted) for ``MLFLOW_TRACKING_URI``, ``T2V_STORAGE_URI``,
``T2V_BUCKET`` and ``AWS_DEFAULT_REGION``: names and URIs only. With ``--mlflow-credentials`` the nodes' MLflow
login (Secrets Manager secret ``<prefix>/mlflow-ray``) goes into MLflow's own credentials file, mode 0600, and
never to stdout or the environment.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shlex
import sys
from pathlib import Path

# SSM parameter (relative to /<prefix>/) -> environment variable. Mirrors infra/names.yaml (ssm_parameters, env).
PARAMETERS = {
    "bucket": "T2V_BUCKET",
    "storage-uri": "T2V_STORAGE_URI",
    "mlflow-tracking-uri": "MLFLOW_TRACKING_URI",
}
# Secrets Manager secret (relative to <prefix>/) with the nodes' MLflow login. infra/names.yaml mlflow_cluster_secret.
MLFLOW_SECRET = "mlflow-ray"


def fetch_env(prefix: str, region: str, ssm_client=None) -> dict[str, str]:
    """Read ``/<prefix>/<name>`` for every entry of :data:`PARAMETERS`; raise ``KeyError`` naming any missing."""
    if ssm_client is None:
        import boto3

        ssm_client = boto3.client("ssm", region_name=region)
    names = [f"/{prefix}/{p}" for p in PARAMETERS]
    resp = ssm_client.get_parameters(Names=names)
    found = {p["Name"]: p["Value"] for p in resp.get("Parameters", [])}
    missing = [n for n in names if n not in found]
    if missing:
        raise KeyError(
            f"SSM parameters not found in {region}: {missing} (is the infra stack deployed there?)"
        )
    env = {var: found[f"/{prefix}/{p}"] for p, var in PARAMETERS.items()}
    env["AWS_DEFAULT_REGION"] = region
    return env


def fetch_mlflow_login(prefix: str, region: str, sm_client=None) -> tuple[str, str]:
    """``(username, password)`` of the secret ``<prefix>/mlflow-ray``; ``KeyError`` naming it when unusable."""
    if sm_client is None:
        import boto3

        sm_client = boto3.client("secretsmanager", region_name=region)
    name = f"{prefix}/{MLFLOW_SECRET}"
    try:
        raw = sm_client.get_secret_value(SecretId=name)["SecretString"]
    except sm_client.exceptions.ResourceNotFoundException:
        raise KeyError(f"secret {name} not found in {region} (is the infra stack deployed there?)") from None
    try:
        value = json.loads(raw)
        username, password = value["username"], value["password"]
    except (ValueError, TypeError, KeyError):
        raise KeyError(f"secret {name} in {region}: expected JSON with 'username' and 'password'") from None
    if not username or not password or any(c in "\r\n" for c in username + password):
        raise KeyError(f"secret {name} in {region}: empty username/password or a line break in them")
    return username, password


def write_mlflow_credentials(path: Path, username: str, password: str) -> None:
    """MLflow's credentials file (``[mlflow]`` tracking username/password), mode 0600, replaced atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cfg = configparser.RawConfigParser()
    # MLflow reads the file with interpolation on: a literal "%" must be written as "%%".
    cfg["mlflow"] = {
        "mlflow_tracking_username": username.replace("%", "%%"),
        "mlflow_tracking_password": password.replace("%", "%%"),
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        cfg.write(f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def render(env: dict[str, str]) -> str:
    """``export K=V`` lines, values shell-quoted, keys sorted."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default="t2v", help="NamePrefix of the infra stack (default: t2v)")
    ap.add_argument("--region", required=True, help="AWS region of the stack (= provider.region)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="extra variable (repeatable)"
    )
    ap.add_argument(
        "--mlflow-credentials",
        metavar="PATH",
        help="also write the nodes' MLflow login to this file (MLflow reads ~/.mlflow/credentials)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        env = fetch_env(args.prefix, args.region)
        login = fetch_mlflow_login(args.prefix, args.region) if args.mlflow_credentials else None
    except KeyError as e:
        print(f"node_env: {e.args[0]}", file=sys.stderr)
        return 2
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            ap.error(f"--set expects NAME=VALUE, got {item!r}")
        env[name] = value
    if login is not None:
        write_mlflow_credentials(Path(args.mlflow_credentials).expanduser(), *login)
    sys.stdout.write(render(env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
