"""console.*: the read-only operator console as the chart runs it beside the serving graph.

The rendered container command must be one the real ``recsys console`` CLI accepts, point at the serving
Service's /metrics and the mounted experiments file, and take its read key from the Secret as
RECSYS_CONSOLE_READ_KEY (the variable the console reads by default).
"""

from __future__ import annotations

import click

from recsys.console.cli import cli as console_cli
from recsys.console.config import ConsoleConfig


def _console(rendered) -> tuple[dict, dict]:
    deployment = rendered.get("Deployment", "recsys-console")
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def test_off_by_default(default_render):
    assert not [o for o in default_render.objects if o["metadata"]["name"].startswith("recsys-console")]


def test_enabled_renders_a_deployment_and_service_the_cli_accepts(render):
    rendered = render(set_values={"console.enabled": "true", "console.readKey.existingSecret": "ops-read-key",
                                  "console.port": "8400"})
    deployment, container = _console(rendered)
    command = container["command"]
    assert command[:2] == ["recsys", "console"]
    with click.Context(console_cli) as ctx:  # the real CLI's option parser: every rendered flag exists and parses
        params = console_cli.make_context("console", command[2:], parent=ctx).params
    assert params["port"] == 8400 and params["host"] == "0.0.0.0"
    assert params["metrics_url"] == "http://recsys-serving:8000/metrics"
    assert params["experiments_config"] == "/etc/recsys/experiments/experiments.yaml"
    assert params["insecure"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["RECSYS_CONSOLE_READ_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ops-read-key", "key": "read-key"}
    assert ConsoleConfig().read_key_env == "RECSYS_CONSOLE_READ_KEY"
    assert "RECSYS_MODEL_STORE_URI" in env and "RECSYS_REDIS_URL" in env
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["experiments"]["readOnly"] is True
    service = rendered.get("Service", "recsys-console")
    assert service["spec"]["ports"][0]["port"] == 8400
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    policy = rendered.get("NetworkPolicy", "recsys-console-http")
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == 8400


def test_insecure_and_no_secret(render):
    rendered = render(set_values={"console.enabled": "true", "console.insecure": "true"})
    _, container = _console(rendered)
    assert "--insecure" in container["command"]
    assert "RECSYS_CONSOLE_READ_KEY" not in {e["name"] for e in container["env"]}
