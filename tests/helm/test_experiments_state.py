"""experiments.stateDir: the writable home of the slot ledger and the frozen plans (issue 23).

Serving gets it as ``experiments_ledger_dir`` (and a read-write mount), the console as ``--plans-dir
<stateDir>/plans`` (and a read-only mount), every pod as RECSYS_EXPERIMENTS_LEDGER_DIR / _PLANS_DIR (the
CLI's env vars). Unset, nothing changes; set without a volume, the render fails with a message.
"""

from __future__ import annotations

import click
import pytest

from recsys.console.cli import cli as console_cli
from recsys.platform.k8s.chart import HelmError

STATE = {"experiments.stateDir": "/var/lib/recsys/experiments/",
         "experiments.stateVolume.persistentVolumeClaim.claimName": "experiments-state", "console.enabled": "true"}


def _mounts(container: dict) -> dict:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_state_dir_flows_to_serving_console_and_env(render):
    from recsys.serving.config import ServingConfig

    r = render(set_values=STATE)
    args = r.serve_config()["applications"][0]["args"]
    assert str(ServingConfig(**args).experiments_ledger_dir) == "/var/lib/recsys/experiments"
    head = r.get("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    mount = _mounts(head["containers"][0])["experiments-state"]
    assert mount == {"name": "experiments-state", "mountPath": "/var/lib/recsys/experiments", "readOnly": False}
    volumes = {v["name"]: v for v in head["volumes"]}
    assert volumes["experiments-state"]["persistentVolumeClaim"] == {"claimName": "experiments-state"}
    env = {e["name"]: e.get("value") for e in head["containers"][0]["env"]}
    assert env["RECSYS_EXPERIMENTS_LEDGER_DIR"] == "/var/lib/recsys/experiments"
    assert env["RECSYS_EXPERIMENTS_PLANS_DIR"] == "/var/lib/recsys/experiments/plans"

    console = r.get("Deployment", "recsys-console")["spec"]["template"]["spec"]
    command = console["containers"][0]["command"]
    with click.Context(console_cli) as ctx:  # the real CLI parses the rendered flags
        params = console_cli.make_context("console", command[2:], parent=ctx).params
    assert params["plans_dir"] == "/var/lib/recsys/experiments/plans"
    assert _mounts(console["containers"][0])["experiments-state"]["readOnly"] is True
    assert {v["name"] for v in console["volumes"]} >= {"experiments", "experiments-state"}


def test_state_dir_unset_changes_nothing(default_render):
    args = default_render.serve_config()["applications"][0]["args"]
    assert "experiments_ledger_dir" not in args
    head = default_render.get("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert "experiments-state" not in _mounts(head["containers"][0])
    assert "RECSYS_EXPERIMENTS_LEDGER_DIR" not in {e["name"] for e in head["containers"][0]["env"]}


@pytest.mark.parametrize("values, message", [
    ({"experiments.stateDir": "/var/lib/x"}, "experiments.stateDir needs experiments.stateVolume"),
    ({"experiments.stateDir": "/etc/recsys/experiments", "experiments.stateVolume.emptyDir.medium": "Memory"},
     "must differ from experiments.mountPath"),
    ({"experiments.stateDir": "relative/dir"}, "stateDir"),
])
def test_a_state_dir_without_a_volume_or_on_the_configmap_fails_the_render(render, values, message):
    with pytest.raises(HelmError) as err:
        render(set_values=values)
    assert message in str(err.value)
