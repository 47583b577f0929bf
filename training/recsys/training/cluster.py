"""Which Ray cluster ``recsys train`` runs on, decided once and said out loud.

``ray.init()`` without an address silently joins the cluster ``ray start`` last started on this
machine — after the demo that is the head ``recsys serve start`` left running, whose CPUs Serve
replicas hold, so the trainer's worker group waits for resources it never gets and the run dies
with "actor died ... cancelled before it started running". The choice made here instead:

1. ``--ray-address ADDRESS`` or ``RAY_ADDRESS`` (what a KubeRay RayJob sets): submit there; a
   shortfall of free resources is reported (an autoscaler may add nodes) but not second-guessed;
   ``local`` means a private local cluster;
2. otherwise a running local cluster (the latest ``ray start``, e.g. ``recsys serve start``'s head)
   is joined when its *free* resources cover the job's worker group;
3. otherwise a private local cluster is started for this command and stops with it.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RUNTIME_ENV_VARS = {"RAY_USAGE_STATS_ENABLED": "0"}


class ClusterError(RuntimeError):
    """The requested cluster cannot be used (unreachable, or it can never fit the job); CLI exit 2."""


@dataclass(frozen=True)
class ClusterChoice:
    """The cluster the job runs on and the sentence that tells the user why."""

    kind: Literal["connected", "requested", "joined", "local"]
    address: str | None
    message: str


def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(res.items()))


def _short(free: dict[str, float], needs: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in needs.items() if free.get(k, 0.0) + 1e-9 < v}


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def discover_local_cluster() -> str | None:
    """The GCS address of the latest ``ray start`` on this machine, if it still answers."""
    try:
        from ray._private.services import find_bootstrap_address

        address = find_bootstrap_address(None)
    except Exception:  # noqa: BLE001 - a private Ray helper; no file / other layout means none found
        return None
    return address if address and _port_open(address) else None


def code_runtime_env() -> dict:
    """Runtime env for a cluster started by another process on this machine: its workers import this
    checkout's ``recsys`` packages (the paths this driver imports them from), not whatever that
    process had on its path."""
    import recsys

    roots = [str(Path(p).parent) for p in getattr(recsys, "__path__", []) if Path(p).is_dir()]
    env = dict(RUNTIME_ENV_VARS)
    if roots:
        env["PYTHONPATH"] = os.pathsep.join([*roots, "${PYTHONPATH}"])
    return {"env_vars": env}


def _start_local(needs: dict[str, float]) -> int:
    """A private local cluster big enough for the worker group (CPUs oversubscribed if needed)."""
    import ray

    cpus = max(os.cpu_count() or 1, math.ceil(needs.get("CPU", 1.0)))
    ray.init(address="local", num_cpus=cpus, configure_logging=False, log_to_driver=True,
             runtime_env={"env_vars": dict(RUNTIME_ENV_VARS)})
    gpus = ray.cluster_resources().get("GPU", 0.0)
    if needs.get("GPU", 0.0) > gpus:
        ray.shutdown()
        raise ClusterError(f"--use-gpu needs {needs['GPU']:g} GPU(s); this machine has {gpus:g} "
                           "(drop --use-gpu, or name a cluster with GPUs in --ray-address / RAY_ADDRESS)")
    return cpus


def connect_for_training(address: str | None, needs: dict[str, float]) -> ClusterChoice:
    """Connect this process to the cluster the job will run on (see the module doc for the order)."""
    import ray

    if ray.is_initialized():
        return ClusterChoice("connected", None, "using the Ray cluster this process is already connected to")
    requested = address or os.environ.get("RAY_ADDRESS") or None
    if requested == "local":
        cpus = _start_local(needs)
        return ClusterChoice("local", None, f"started a private local Ray cluster ({cpus} CPUs) as requested")
    if requested:
        if "://" not in requested and not _port_open(requested):
            raise ClusterError(f"no Ray cluster answers at {requested} (--ray-address / RAY_ADDRESS)")
        try:
            ray.init(address=requested, configure_logging=False, runtime_env={"env_vars": dict(RUNTIME_ENV_VARS)})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"cannot join the Ray cluster at {requested}: {e}") from e
        free = ray.available_resources()
        short = _short(free, needs)
        note = (f"; it has {_fmt({k: free.get(k, 0.0) for k in short})} free of the {_fmt(needs)} the workers "
                "need, so the job waits for them (autoscaler)") if short else f" ({_fmt(needs)} for the workers)"
        return ClusterChoice("requested", requested, f"submitting to the Ray cluster at {requested}{note}")
    found = discover_local_cluster()
    if found:
        ray.init(address=found, configure_logging=False, runtime_env=code_runtime_env())
        free = {k: v for k, v in ray.available_resources().items() if k in needs}
        short = _short(free, needs)
        if not short:
            return ClusterChoice("joined", found, f"joined the running Ray cluster at {found} "
                                                  f"({_fmt(free)} free; the workers take {_fmt(needs)})")
        ray.shutdown()
        cpus = _start_local(needs)
        return ClusterChoice("local", None, f"the running Ray cluster at {found} has only {_fmt(free) or 'nothing'} "
                                            f"free (the workers need {_fmt(needs)}): started a private local "
                                            f"Ray cluster ({cpus} CPUs) instead")
    cpus = _start_local(needs)
    return ClusterChoice("local", None, f"no running Ray cluster found: started a private local Ray cluster "
                                        f"({cpus} CPUs)")
