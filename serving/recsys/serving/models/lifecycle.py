"""What a recommendation replica serves, and how that changes: start-up, hot swap, fleet-wide rollout.

The served versions are one :class:`~recsys.serving.models.bundle.Bundle`, swapped as a whole (one attribute
write). :meth:`BundleLifecycle.reload` rolls versions out to every replica through Serve's
``user_config`` (docs/rollout.md); :meth:`BundleLifecycle.apply_rollout` is each replica's part of it.
Kept apart from the per-request pipeline in :mod:`recsys.serving.pipeline.service`, which mixes this in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from recsys.serving.catalog.feed import catalog_stream_id
from recsys.serving.http.schemas import ReloadResponse
from recsys.serving.models.bundle import ActiveVersions, Bundle, BundleLoader
from recsys.serving.models.rollout import RolloutRefused, RolloutSpec, wait_for_inner_deployments

if TYPE_CHECKING:  # the attributes RecommendationService provides (declared here, set there)
    from recsys.serving.catalog.feed import LiveCatalog
    from recsys.serving.config import ServingConfig
    from recsys.serving.pipeline.features.stage import FeatureHydration
    from recsys.serving.pipeline.metrics import ServingMetrics
    from recsys.serving.pipeline.state import Target

log = logging.getLogger(__name__)


class BundleLifecycle:
    """Mixed into ``RecommendationService``; uses its ``cfg``, ``loader``, ``live``, ``hydration``, ``shards``.

    ``redeploy(cfg, spec, app_name)`` is injected by the app (``recsys.serving.app.redeploy``): it
    redeploys the running app with a new ``user_config``; None outside Serve.
    """

    cfg: ServingConfig
    loader: BundleLoader
    live: LiveCatalog
    hydration: FeatureHydration
    exploration: Any  # these four are closed by aclose
    experiments: Any
    cache: Any
    features: Any
    shards: list[Target]
    ranker: Target | None
    metrics: ServingMetrics
    bundle: Bundle | None
    redeploy: Callable[[Any, RolloutSpec, str], None] | None
    _load_lock: asyncio.Lock
    _reload_task: asyncio.Task | None
    _preloaded: list[ActiveVersions]
    _rollout: RolloutSpec | None
    _catalog_items: pd.DataFrame | None

    # ------------------------------------------------------------------ loading / hot swap
    async def start(self) -> None:
        """Resolve and load the configured versions; shards/ranker load theirs in their constructors."""
        versions = self.loader.resolve(self.cfg.retrieval_version, self.cfg.ranking_version)
        self._activate(await asyncio.to_thread(self._load_bundle, versions))
        await self.hydration.start()  # the item-feature snapshot: requests then read no item rows
        items, self._catalog_items = self._catalog_items, None  # read once in __init__; not kept
        await self.live.start(items, lambda: self.explorer, catalog_stream_id(self.cfg.catalog_path))
        if self.cfg.reload_interval_s > 0 and self._reload_task is None:
            self._reload_task = asyncio.get_running_loop().create_task(self._reload_loop())

    async def aclose(self) -> None:
        """Release what this service holds: background tasks (they reference it, so it could never be freed),
        threads and every Redis client. A rolling upgrade that replaces the service in-process (tests,
        ``benchmarks/months.py``) must not leave sockets and memory-mapped artifacts behind; the app's
        lifespan calls this on shutdown."""
        if self._reload_task is not None:
            self._reload_task.cancel()
            self._reload_task = None
        self.live.stop()
        await self.hydration.stop()
        self.exploration.close()
        self.experiments.close()
        await self.cache.cache.aclose()
        await self.features.aclose()
        self.bundle = None  # with the loader's cache: the artifacts (open memory-mapped files) can be freed
        self.loader.release()

    def _activate(self, bundle: Bundle) -> None:
        self.bundle = bundle  # the swap: one attribute write, atomic for this event loop
        self.metrics.set_versions(bundle.versions.as_dict())

    def _load_bundle(self, versions: ActiveVersions) -> Bundle:
        """Read the ingress-side artifacts of ``versions`` (blocking; counted: an idle poll reads none)."""
        self.metrics.bundle_loads.inc()
        return self.loader.load(versions)

    async def _reload_loop(self) -> None:
        refused: ActiveVersions | None = None  # a declarative app: say it once per desired version set
        while True:
            await asyncio.sleep(self.cfg.reload_interval_s)
            try:
                result = await self.reload()
                self.metrics.rollout_polls.labels("changed" if result.changed else "unchanged").inc()
                refused = None
            except RolloutRefused as e:
                self.metrics.rollout_polls.labels("refused").inc()
                wanted = getattr(e, "versions", None)
                if wanted != refused:
                    log.warning("promoted versions changed to %s but %s", wanted, e)
                    refused = wanted
            except Exception as e:  # noqa: BLE001 - a bad promotion must never stop the poller
                self.metrics.rollout_polls.labels("failed").inc()
                log.warning("periodic reload failed, keeping current versions: %s", e)

    async def apply_rollout(self, spec: RolloutSpec) -> ReloadResponse:
        """This replica's part of a fleet-wide rollout (``Ingress.reconfigure``): warm, then swap.

        The shard and ranker deployments get the same spec; waiting for them to finish updating
        first means the new pair is loaded on every inner replica before any answer uses it.
        """
        async with self._load_lock:
            previous = self.active
            versions = self.loader.resolve(spec.retrieval_version, spec.ranking_version)
            preload = [self.loader.resolve(p.retrieval_version or versions.retrieval,
                                           p.ranking_version or versions.ranking) for p in spec.preload]
            if previous == versions and self._preloaded == preload:
                self._rollout = spec
                return ReloadResponse(changed=False, model_versions=versions.as_dict(), previous=versions.as_dict())
            await wait_for_inner_deployments(self._app_name(), "Ingress", spec.settle_timeout_s)
            await asyncio.gather(*(s.call("load", versions.retrieval) for s in self.shards))
            if self.ranker is not None and versions.ranking:
                await self.ranker.call("load", versions.ranking)
            for p in preload:  # variant bundles: ingress-side artifacts ready before any treatment request
                await asyncio.to_thread(self.loader.retrieval, p.retrieval)
                if p.ranking:
                    await asyncio.to_thread(self.loader.spec, p.ranking)
            self._activate(await asyncio.to_thread(self._load_bundle, versions))
            self._rollout, self._preloaded = spec, preload
            keep = {versions.retrieval, *(p.retrieval for p in preload)}
            if previous is not None:
                keep.add(previous.retrieval)
            self.loader.retain(sorted(keep))
            return ReloadResponse(changed=previous != versions, model_versions=versions.as_dict(),
                                  previous=previous.as_dict() if previous else {})

    async def reload(self, retrieval_version: str | None = None, ranking_version: str | None = None) -> ReloadResponse:
        """Roll the given (default: promoted) versions out to every replica of the app.

        Inside Serve this redeploys the app with a new ``user_config`` (an in-place update that
        reaches every replica of every deployment) and returns once this replica serves the new
        bundle; outside Serve (plain-class tests) it applies the spec to this instance only.
        Unknown versions are refused here, before anything changes.
        """
        versions = await asyncio.to_thread(self.loader.resolve, retrieval_version or self.cfg.retrieval_version,
                                           ranking_version or self.cfg.ranking_version)
        spec = RolloutSpec(retrieval_version=versions.retrieval, ranking_version=versions.ranking,
                           preload=self._rollout.preload if self._rollout else [])
        previous = self.active
        if previous == versions:
            # The desired version set is what this replica serves (every replica got the same user_config):
            # no artifact read, no redeploy, and no refusal from a declaratively deployed app.
            return ReloadResponse(changed=False, model_versions=versions.as_dict(), previous=versions.as_dict())
        app_name = self._app_name()
        if app_name is None:
            return await self.apply_rollout(spec)
        if self.redeploy is None:
            refused = RolloutRefused("no redeploy function was given to this replica (build the app with build_app)")
            refused.versions = versions
            raise refused
        # preflight on this replica: a corrupt or incomplete version is refused before any replica sees it
        await asyncio.to_thread(self._load_bundle, versions)
        try:
            await asyncio.to_thread(self.redeploy, self.cfg, spec, app_name)
        except RolloutRefused as e:
            e.versions = versions
            raise
        self.metrics.rollout_redeploys.inc()
        deadline = time.monotonic() + spec.settle_timeout_s
        while self.active != versions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return ReloadResponse(changed=previous != versions, model_versions=versions.as_dict(),
                              previous=previous.as_dict() if previous else {})

    @staticmethod
    def _app_name() -> str | None:
        """The Serve application this replica belongs to; None outside Serve."""
        try:
            from ray import serve

            return serve.get_replica_context().replica_id.deployment_id.app_name
        except Exception:  # noqa: BLE001 - not running inside a Serve replica
            return None
