"""``recsys serve start|stop|status``: run the Serve application on a local (or given) Ray cluster.

``start`` builds the same application KubeRay runs (``recsys.serving.app:build_app``) from the
platform settings, an optional Serve-config/args YAML and flags; it starts a Ray head if none is
running (so the app outlives this command), waits until ``/readyz`` answers, and returns
(``--blocking`` keeps it in the foreground until Ctrl-C).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

APP_NAME = "recsys"


class ServeCliError(click.ClickException):
    exit_code = 2


def _platform(ctx: click.Context):
    obj = ctx.find_object(object)
    if obj is not None and hasattr(obj, "model_store_uri"):
        return obj
    from recsys.platform.config import load_config

    return load_config(None)


def _args_from_file(path: str | None) -> dict[str, Any]:
    """Builder args from a plain args YAML or a Serve config (``applications[0].args``)."""
    if path is None:
        return {}
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ServeCliError(f"cannot read {path}: {e}") from e
    if isinstance(doc, dict) and "applications" in doc:
        apps = doc.get("applications") or []
        doc = (apps[0] or {}).get("args", {}) if apps else {}
    if not isinstance(doc, dict):
        raise ServeCliError(f"{path}: expected a mapping of builder args")
    return doc


RAY_HEAD_PORT = 6380
"""GCS port of a Ray head started by `serve start`: Ray's default (6379) is Redis's port."""


def _head_address() -> str:
    from ray._private.services import get_node_ip_address

    return f"{get_node_ip_address()}:{RAY_HEAD_PORT}"


def _port_open(address: str) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve_speed_env(throughput_optimized: bool, haproxy: bool | None, host: str = "0.0.0.0") -> dict[str, str]:
    """Ray Serve's speed switches as environment variables (read once, when Serve's processes start).

    Throughput mode (Ray >= 2.56) moves handle calls to direct gRPC between replicas; HAProxy
    replaces Serve's Python HTTP proxy. Both must be in the environment of the Ray head, so they
    only apply to a head this command starts; joining a running cluster keeps its settings.

    ``haproxy=None`` (the default) means "when the binary is installed and the server is meant to be
    reachable from the network": measured on 2 cores HAProxy doubles recommendation throughput and
    takes single-event ingestion from ~270 to ~1,100/s (docs/serving.md, docs/operations.md), but in
    that mode Ray binds every ingress replica's own HTTP port (and HAProxy's metrics port) on all
    interfaces, whatever ``--host`` says. So a loopback-only server keeps Serve's proxy unless
    ``--haproxy`` is given explicitly.
    """
    import shutil

    if haproxy is None:
        haproxy = shutil.which("haproxy") is not None and host not in LOOPBACK_HOSTS
    elif haproxy and shutil.which("haproxy") is None:
        raise ServeCliError("--haproxy needs the `haproxy` binary on PATH (Debian: apt-get install haproxy)")
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1" if throughput_optimized else "0"}
    if haproxy:
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        if host in LOOPBACK_HOSTS:
            click.echo("note: with --haproxy Ray binds the ingress replicas' HTTP ports and HAProxy's metrics port "
                       "on all interfaces, not only on --host (writes still need the API key)")
    return env


def _connect(start_if_missing: bool, num_cpus: int | None = None, extra_env: dict[str, str] | None = None) -> None:
    """Join the cluster in RAY_ADDRESS, else our local head on RAY_HEAD_PORT (started if missing)."""
    import os

    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or _head_address()
    # ray.init retries an absent GCS for minutes: probe the port first so "not running" is instant.
    if os.environ.get("RAY_ADDRESS") or _port_open(address):
        if extra_env:
            click.echo(f"note: joining the running Ray cluster at {address}: its Serve speed settings stay as "
                       f"started (`recsys serve stop --ray` first to apply {extra_env})", err=True)
        try:
            ray.init(address=address, namespace="serve", log_to_driver=False, configure_logging=False)
            return
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ServeCliError(f"cannot join the Ray cluster at {address}: {e}") from e
    if not start_if_missing:
        raise ServeCliError(
            f"no Ray cluster is answering at {address} (nothing is served); start with `recsys serve start`"
        )
    cmd = ["ray", "start", "--head", f"--port={RAY_HEAD_PORT}", "--disable-usage-stats",
           "--include-dashboard=false"]
    if num_cpus:
        cmd.append(f"--num-cpus={num_cpus}")
    ray_bin = Path(sys.executable).with_name("ray")
    if ray_bin.exists():
        cmd[0] = str(ray_bin)
    # Ray 2.60's `ray start` turns token auth on by default while a driver defaults to off; the local
    # head started here uses the driver's mode (off unless RAY_AUTH_MODE says otherwise) so both agree.
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), **(extra_env or {})}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise ServeCliError(f"could not start a Ray head: {res.stderr.strip()[-500:]}")
    ray.init(address=address, namespace="serve", log_to_driver=False, configure_logging=False)


@click.group()
def cli() -> None:
    """Run the online recommendation service (Ray Serve)."""


@cli.command()
@click.option("--serve-config", "serve_config", type=click.Path(dir_okay=False, exists=True), default=None,
              help="serve_config.yaml (applications[0].args) or a YAML of builder args.")
@click.option("--model-store-uri", default=None, help="Model store root (default: platform setting).")
@click.option("--retrieval-version", default=None, help="two_tower version (default: promoted).")
@click.option("--ranking-version", default=None, help="ranker version (default: promoted).")
@click.option("--num-shards", type=int, default=None, help="Retrieval shards.")
@click.option("--redis-url", default=None, help="Online feature store Redis (default: platform setting).")
@click.option("--experiments-config", type=click.Path(dir_okay=False), default=None)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--num-cpus", type=int, default=None, help="CPUs of a Ray head started by this command.")
@click.option("--throughput-optimized/--no-throughput-optimized", "throughput_optimized", default=True,
              show_default=True,
              help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1 for a Ray head started here (direct gRPC between replicas; "
                   "measured: benchmarks/serve_overhead.py, docs/serving.md).")
@click.option("--haproxy/--no-haproxy", "haproxy", default=None,
              help="RAY_SERVE_ENABLE_HA_PROXY=1: HAProxy as the HTTP ingress (Debian's `haproxy`; scripts/setup.sh "
                   "installs it; ~2x requests/s). Default: on when `haproxy` is on PATH and --host is not loopback "
                   "(the mode binds replica ports on all interfaces).")
@click.option("--blocking/--detached", default=False, show_default=True,
              help="Stay in the foreground until Ctrl-C (default: return once ready).")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for /readyz.")
@click.option("--api-key-file", type=click.Path(dir_okay=False, exists=True), envvar="RECSYS_API_KEY_FILE",
              default=None, help="File holding the API key(s) of /v1/events and /admin/* [env RECSYS_API_KEY_FILE].")
@click.option("--insecure", is_flag=True, default=False,
              help="Leave /v1/events and /admin/* open when no API key is configured (local experiments only).")
@click.pass_context
def start(ctx: click.Context, serve_config, model_store_uri, retrieval_version, ranking_version, num_shards,
          redis_url, experiments_config, host, port, num_cpus, throughput_optimized, haproxy, blocking,
          timeout, api_key_file, insecure) -> None:
    """Deploy the application and wait until it is ready."""
    from ray import serve

    from recsys.serving.app import ServingConfigError, build_app, parse_args

    platform = _platform(ctx)
    # Absolute paths: Serve replicas do not necessarily share this process's working directory.
    store_uri = str(platform.model_store_uri)
    if "://" not in store_uri:
        store_uri = str(Path(store_uri).resolve())
    args: dict[str, Any] = {
        "model_store_uri": store_uri,
        "redis_url": platform.redis_url,
        "exposure_log_dir": str((Path(platform.log_dir) / "exposures").resolve()),
    }
    items = Path(platform.data_dir) / "items.parquet"
    if items.exists():
        args["catalog_path"] = str(items.resolve())
    if (Path(platform.feature_repo_dir) / "feature_store.yaml").exists():
        args["feature_repo_dir"] = str(Path(platform.feature_repo_dir).resolve())
    args.update(_args_from_file(serve_config))
    flags = {"model_store_uri": model_store_uri, "retrieval_version": retrieval_version,
             "ranking_version": ranking_version, "num_shards": num_shards, "redis_url": redis_url,
             "experiments_config": experiments_config}
    args.update({k: v for k, v in flags.items() if v is not None})
    if api_key_file or insecure:
        security = dict(args.get("security") or {})
        if api_key_file:
            security["api_key_file"] = str(Path(api_key_file).resolve())
        if insecure:
            security["insecure"] = True
        args["security"] = security
    try:
        cfg = parse_args(args)
        from recsys.platform.model_store import ModelStore

        store = ModelStore(cfg.model_store_uri)
        store.get(cfg.retrieval_model, cfg.retrieval_version)
    except ServingConfigError as e:
        raise ServeCliError(str(e)) from e
    except Exception as e:  # noqa: BLE001 - e.g. nothing trained yet: say so before starting anything
        raise ServeCliError(f"cannot serve: {e}") from e
    speed_env = serve_speed_env(throughput_optimized, haproxy, host)
    _connect(start_if_missing=True, num_cpus=num_cpus, extra_env=speed_env)
    serve.start(http_options={"host": host, "port": port})
    ingress = "HAProxy" if speed_env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "Serve's proxy"
    click.echo(f"deploying {APP_NAME} ({cfg.num_shards} shards, HTTP via {ingress}) from {cfg.model_store_uri} ...")
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    _wait_ready(url, timeout)
    click.echo(f"ready: {url}  (docs: {url}/docs; stop with `recsys serve stop`)")
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            serve.delete(APP_NAME)
            click.echo("stopped")


def _wait_ready(url: str, timeout: float) -> None:
    import httpx

    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text[:200]
        except httpx.HTTPError as e:
            last = str(e)
        time.sleep(1)
    raise ServeCliError(f"{url} not ready after {timeout:.0f}s (last answer: {last}); see `recsys serve status`")


@cli.command()
@click.option("--ray/--no-ray", "stop_ray", default=False, help="Also stop the local Ray cluster.")
@click.option("--app", "app_name", default=APP_NAME, show_default=True, help="Serve application name.")
def stop(stop_ray: bool, app_name: str) -> None:
    """Delete the application (and optionally stop Ray)."""
    from ray import serve

    _connect(start_if_missing=False)
    serve.delete(app_name)
    click.echo(f"deleted application {app_name}")
    if stop_ray:
        import ray

        ray.shutdown()
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop"], capture_output=True)
        click.echo("ray stopped")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--app", "app_name", default=APP_NAME, show_default=True, help="Serve application name.")
def status(as_json: bool, app_name: str) -> None:
    """Application and deployment status as Serve reports it."""
    from ray import serve

    _connect(start_if_missing=False)
    st = serve.status()
    app = st.applications.get(app_name)
    if app is None:
        raise ServeCliError(f"application {app_name!r} is not deployed; start it with `recsys serve start`")
    data = {
        "application": app_name,
        "status": str(app.status),
        "message": app.message,
        "deployments": {name: {"status": str(d.status), "replicas": dict(d.replica_states)}
                        for name, d in app.deployments.items()},
    }
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"{app_name}: {data['status']} {data['message'] or ''}".rstrip())
    for name, d in data["deployments"].items():
        click.echo(f"  {name:<20} {d['status']:<12} {d['replicas']}")
