"""Fleet-wide, atomic model rollout through Ray Serve's ``user_config``.

Why ``user_config``: a Serve deployment handle call reaches *one* replica, so a reload sent through
handles leaves other replicas on old versions. ``user_config`` is delivered by the Serve controller to
*every* replica's ``reconfigure`` (in place, no restart), for ``serve.run``/``serve deploy`` and for
KubeRay's ``serveConfigV2`` alike. Every deployment gets the same :class:`RolloutSpec`:

* retrieval shards and the ranker load the bundle's version plus every variant version named by an
  active experiment (``preload``), keep the previously active one for requests in flight, and drop
  the rest;
* the ingress waits until the shard and ranker deployments have finished updating, warms the new
  bundle (a search per shard, a ranker load), loads its own side, then swaps its bundle in one
  assignment. Retrieval and ranking are resolved together, so a request never pairs retrieval vN
  with ranker vM of another rollout.

``generation`` only exists to make a new spec differ from the old one when "promoted" moved but the
spec would otherwise be identical (``recsys serve rollout`` bumps it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class VariantVersions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retrieval_version: str | None = None
    ranking_version: str | None = None


class RolloutSpec(BaseModel):
    """The ``user_config`` of every deployment of the app (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    retrieval_version: str | None = Field(None, description="None = the store's promoted version")
    ranking_version: str | None = Field(None, description="None = the store's promoted version")
    preload: list[VariantVersions] = Field(default_factory=list, description="variant bundles kept warm")
    generation: int = Field(0, ge=0, description="bumped by `recsys serve rollout` to force a re-resolve")
    settle_timeout_s: float = Field(300.0, gt=0, description="ingress: max wait for shards/ranker to update")

    def retrieval_versions(self) -> list[str | None]:
        return _unique([self.retrieval_version, *(p.retrieval_version for p in self.preload if p.retrieval_version)])

    def ranking_versions(self) -> list[str | None]:
        return _unique([self.ranking_version, *(p.ranking_version for p in self.preload if p.ranking_version)])


def _unique(values: list[str | None]) -> list[str | None]:
    out: list[str | None] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


class VersionSet:
    """What an inner deployment (shard, ranker) keeps loaded: the spec's versions + the previous active one."""

    def __init__(self) -> None:
        self.active: str | None = None

    def apply(self, wanted: list[str | None], load: Any, retain: Any) -> list[str]:
        """Load every wanted version (first = active), then retain them plus the previous active one."""
        loaded = [load(v) for v in wanted]
        keep = sorted({*loaded, *([self.active] if self.active else [])})
        retain(keep)
        self.active = loaded[0]
        return keep


async def wait_for_inner_deployments(app_name: str | None, own_deployment: str, timeout_s: float) -> bool:
    """Inside the ingress: wait until every other deployment of the app is HEALTHY (done updating).

    Returns False (and the caller proceeds, relying on lazy loading) when Serve's status is not
    reachable, e.g. when the service runs outside Serve in tests.
    """
    try:
        from ray import serve
        from ray.serve.schema import DeploymentStatus
    except ImportError:
        return False
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            apps = serve.status().applications
        except Exception as e:  # noqa: BLE001 - no Serve controller reachable: nothing to wait for
            log.info("serve status unavailable (%s); not waiting for inner deployments", e)
            return False
        app = apps.get(app_name) if app_name else next(iter(apps.values()), None)
        if app is None:
            return False
        pending = [name for name, d in app.deployments.items()
                   if name != own_deployment and d.status != DeploymentStatus.HEALTHY]
        if not pending:
            return True
        if time.monotonic() > deadline:
            log.warning("rollout: deployments %s still updating after %.0f s; switching anyway", pending, timeout_s)
            return False
        await asyncio.sleep(0.25)


def replica_id() -> str | None:
    """This Serve replica's unique id (None outside Serve), so a caller polling a deployment can tell replicas apart."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # noqa: BLE001 - not inside a Serve replica (plain-class use)
        return None


class RolloutRefused(RuntimeError):
    """The rollout cannot be done from inside the app (declaratively deployed)."""

    versions: Any = None  # the desired versions that were refused (set by the caller; the poller logs once per set)
