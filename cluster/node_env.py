"""Write the environment a t2v Ray node needs, read from the SSM parameters that infra/t2v.cfn.yaml creates.

Runs on every node of cluster/aws.yaml during setup (instance role credentials, region from the launcher
config), before ``ray start``, so Ray workers and job drivers inherit the variables::

    python cluster/node_env.py --prefix t2v --region us-west-2 --set RAY_AUTH_MODE=token > ~/.t2v_env

Output is ``export NAME=value`` lines (shell-quoted) for ``MLFLOW_TRACKING_URI``, ``T2V_STORAGE_URI``,
``T2V_BUCKET`` and ``AWS_DEFAULT_REGION``. Only names and URIs are handled here: never credentials.
"""

from __future__ import annotations

import argparse
import shlex
import sys

# SSM parameter (relative to /<prefix>/) -> environment variable. Mirrors infra/names.yaml (ssm_parameters, env).
PARAMETERS = {
    "bucket": "T2V_BUCKET",
    "storage-uri": "T2V_STORAGE_URI",
    "mlflow-tracking-uri": "MLFLOW_TRACKING_URI",
}


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


def render(env: dict[str, str]) -> str:
    """``export K=V`` lines, values shell-quoted, keys sorted."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default="t2v", help="NamePrefix of the infra stack (default: t2v)")
    ap.add_argument("--region", required=True, help="AWS region of the stack (= provider.region)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="extra variable (repeatable)"
    )
    args = ap.parse_args(argv)
    try:
        env = fetch_env(args.prefix, args.region)
    except KeyError as e:
        print(f"node_env: {e.args[0]}", file=sys.stderr)
        return 2
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            ap.error(f"--set expects NAME=VALUE, got {item!r}")
        env[name] = value
    sys.stdout.write(render(env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
