"""Adapter between serving and ``recsys.experiments`` (assignment + exposure/outcome log).

With ``experiments_config`` unset, or the experiments package missing, every request is
"no experiment" and nothing is logged. Otherwise every layer is applied: the router assigns the
unit in each layer independently (`ExperimentRouter.assign`), `ExperimentRouter.resolve` merges
the layers' model versions and re-ranking parameters (the first layer that sets a field wins), and
after the answer is built one exposure per layer is logged with the variant that was actually
served. A layer whose setting did not reach the answer — its version missing or failing, or
overridden by an earlier layer — is logged as ``variant="fallback"`` with the assigned variant and
the reason, so the analysis never credits a treatment with answers it did not shape.

Experiment integrity (issue 23):

* **Targeting is server-side.** The attributes the router matches come from the user's stored features
  (`targeting_attributes`: ``segment`` is ``returning`` when the online store holds a history for the
  user, else ``new``) and, optionally, from a context signed with the server's ``targeting_key``
  (``context.targeting = sign_targeting(key, user_id, attributes)``, HMAC-SHA256 over the user id and
  the attributes). The raw request body is never read for targeting: a caller could otherwise opt in or
  out of an experiment, or switch segment between requests.
* **Exposure ids are the server's**: each served response gets a fresh ``exposure_id`` shared by its
  per-layer records; the client's X-Request-ID stays in ``request_id``.
* **Degraded reasons are logged for every arm** (``degraded``), so the fallback/degraded rate per arm
  compares like with like (only versioned variants were relabelled ``fallback`` before).
* **Outcomes carry the event's time** (ingestion validated it and clamped it to the allowed clock skew),
  with the time serving logged it in ``received_ts``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.serving.config import ServingConfig
from recsys.serving.models.rollout import VariantVersions

log = logging.getLogger(__name__)

FALLBACK = "fallback"
# degraded reasons meaning "this model kind was not served as asked"
_RETRIEVAL_FAILURES = frozenset({"experiment_version_unavailable", "retrieval_shard_unavailable", "no_candidates"})
_RANKING_FAILURES = frozenset({"ranker_unavailable", "experiment_version_unavailable"})


@dataclass(frozen=True)
class LayerChoice:
    """The unit's variant in one layer, and what that variant asks for."""

    experiment: str
    variant: str
    layer: str
    retrieval_version: str | None = None
    ranking_version: str | None = None
    reranking: dict[str, Any] = field(default_factory=dict)
    is_holdout: bool = False


@dataclass(frozen=True)
class VariantChoice:
    """Every layer's assignment plus the merged settings one request is served with.

    ``experiment``/``variant``/``layer`` name the first layer's assignment (what the response
    reports); ``retrieval_version``/``ranking_version``/``reranking`` are `router.resolve` over all.
    """

    experiment: str | None = None
    variant: str | None = None
    layer: str | None = None
    retrieval_version: str | None = None
    ranking_version: str | None = None
    reranking: dict[str, Any] = field(default_factory=dict)
    is_holdout: bool = False
    layers: tuple[LayerChoice, ...] = ()

    @property
    def cache_key(self) -> str:
        """Part of the result-cache key: every layer's variant, since any of them can change the answer."""
        if not self.layers:
            return "none"
        return "|".join(f"{c.experiment}:{c.variant}" for c in self.layers)


NO_EXPERIMENT = VariantChoice()


def fallback_reason(
    choice: VariantChoice, layer: LayerChoice, served: dict[str, str], degraded: Sequence[str]
) -> str | None:
    """Why ``layer``'s variant did not shape the answer, or None when it did.

    ``served`` is the response's ``model_versions`` (``retrieval``/``ranking``), ``degraded`` its reasons.
    """
    failures = set(degraded)
    if layer.retrieval_version is not None:
        if choice.retrieval_version != layer.retrieval_version:
            return f"retrieval_version {layer.retrieval_version} overridden by an earlier layer"
        if served.get("retrieval") != layer.retrieval_version or failures & _RETRIEVAL_FAILURES:
            return f"retrieval_version {layer.retrieval_version} not served ({', '.join(sorted(failures)) or 'other'})"
    if layer.ranking_version is not None:
        if choice.ranking_version != layer.ranking_version:
            return f"ranking_version {layer.ranking_version} overridden by an earlier layer"
        if served.get("ranking") != layer.ranking_version or failures & _RANKING_FAILURES:
            return f"ranking_version {layer.ranking_version} not served ({', '.join(sorted(failures)) or 'other'})"
    overridden = [k for k, v in layer.reranking.items() if choice.reranking.get(k) != v]
    if overridden:
        return f"reranking {overridden} overridden by an earlier layer"
    return None


def experiment_variant_versions(experiments_config: str | Path | None) -> list[VariantVersions]:
    """Every (retrieval, ranking) pair named by a variant of an experiment in the config."""
    if experiments_config is None:
        return []
    try:
        from recsys.experiments.config import load_config
    except ImportError:  # experiments component not installed: nothing to preload
        return []
    cfg = load_config(experiments_config)
    pairs = {VariantVersions(retrieval_version=v.retrieval_version, ranking_version=v.ranking_version)
             for e in cfg.experiments for v in e.variants if v.retrieval_version or v.ranking_version}
    return sorted(pairs, key=lambda p: (p.retrieval_version or "", p.ranking_version or ""))


def _targeting_body(user_id: int, attributes: Mapping[str, Any]) -> bytes:
    return json.dumps({"user_id": int(user_id), "attributes": dict(attributes)}, sort_keys=True,
                      separators=(",", ":")).encode()


def sign_targeting(key: str, user_id: int, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """``context.targeting`` for a trusted caller: the attributes and their HMAC for this user."""
    sig = hmac.new(key.encode(), _targeting_body(user_id, attributes), hashlib.sha256).hexdigest()
    return {"attributes": dict(attributes), "sig": sig}


def verified_targeting(key: str | None, user_id: int, signed: Any) -> dict[str, Any]:
    """The attributes of a correctly signed ``context.targeting`` for this user, else {}."""
    if not key or not isinstance(signed, Mapping):
        return {}
    attributes, sig = signed.get("attributes"), signed.get("sig")
    if not isinstance(attributes, Mapping) or not isinstance(sig, str):
        return {}
    want = hmac.new(key.encode(), _targeting_body(user_id, attributes), hashlib.sha256).hexdigest()
    return dict(attributes) if hmac.compare_digest(want, sig) else {}


class ExperimentGateway:
    clock: Callable[[], float] = staticmethod(time.time)
    """Time of an exposure (and of an outcome without its own): a simulation may run it faster (months.py)."""

    def __init__(self, cfg: ServingConfig):
        self.router: Any = None
        self.log: Any = None
        self.archiver: Any = None
        self._stream: Any = None
        self.targeting_key = cfg.targeting_key
        if cfg.experiments_config is None:
            return
        try:
            from recsys.experiments.exposure_log import ExposureLog
            from recsys.experiments.router import ExperimentRouter
        except ImportError as e:  # experiments component not installed: serve without experiments
            log.warning("experiments_config set but recsys.experiments unavailable: %s", e)
            return
        self.router = ExperimentRouter.from_file(cfg.experiments_config, ledger_dir=cfg.experiments_ledger_dir)
        if cfg.log_archive is None:
            self.log = ExposureLog(cfg.exposure_log_dir)
            return
        from recsys.platform.log_archiver import LogArchiver, LogStream

        self._stream = LogStream(cfg.redis_url, cfg.log_archive)
        self.log = ExposureLog(None, sink=self._stream.publish)
        if cfg.log_archive.run_archiver:  # one consumer of the one group per replica: they share the stream
            self.archiver = LogArchiver(cfg.redis_url, cfg.log_archive)
            self.archiver.start()

    def close(self) -> None:
        """Stop the archiver thread, close the log and the Redis clients (the service is being replaced)."""
        for part in (self.archiver, self.log, self._stream):
            if part is not None:
                (part.stop if part is self.archiver else part.close)()

    @property
    def enabled(self) -> bool:
        return self.router is not None

    @property
    def needs_attributes(self) -> bool:
        """Whether any experiment targets: only then is the user's stored row read before assignment."""
        return self.router is not None and any(not e.targeting.is_everyone for e in self.router.config.experiments)

    def targeting_attributes(
        self, user_id: int, stored: Any, context: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Attributes for targeting, from the server's side only (see the module docstring).

        ``stored``: the user's online feature row (`HydratedFeatures`), None when it could not be read (then
        no segment is known and targeted experiments leave the user out of this request).
        """
        attributes: dict[str, Any] = {}
        if stored is not None:
            attributes["segment"] = "returning" if getattr(stored, "recent_item_ids", None) else "new"
        signed = (context or {}).get("targeting")
        attributes.update(verified_targeting(self.targeting_key, user_id, signed))
        return attributes

    def assign(self, user_id: int, attributes: dict[str, Any] | None) -> VariantChoice:
        """Assign the user in every layer and resolve what the request is served with."""
        if self.router is None:
            return NO_EXPERIMENT
        self.router.maybe_reload(min_interval_s=5.0)
        assignments = self.router.assign(str(user_id), attributes or None)
        if not assignments:
            return NO_EXPERIMENT
        settings = self.router.resolve(assignments)
        layers = tuple(
            LayerChoice(
                experiment=a.experiment,
                variant=a.variant,
                layer=a.layer,
                retrieval_version=a.retrieval_version,
                ranking_version=a.ranking_version,
                reranking=dict(a.reranking),
                is_holdout=a.is_holdout,
            )
            for a in assignments
        )
        first = layers[0]
        return VariantChoice(
            experiment=first.experiment,
            variant=first.variant,
            layer=first.layer,
            retrieval_version=settings["retrieval_version"],
            ranking_version=settings["ranking_version"],
            reranking=dict(settings["reranking"]),
            is_holdout=first.is_holdout,
            layers=layers,
        )

    def log_exposure(
        self,
        user_id: int,
        choice: VariantChoice,
        request_id: str,
        items: list[int],
        served: dict[str, str] | None = None,
        degraded: Sequence[str] = (),
        propensities: list[float] | None = None,
        exposure_id: str | None = None,
        cached_from: str | None = None,
    ) -> None:
        """One exposure per layer, with the variant actually served (``fallback`` + reason otherwise).

        ``request_id`` is the client's id; the records of this response share one server ``exposure_id``
        (``exposure_id``, else a fresh one). ``cached_from``: this response replays the cached answer of
        that decision (its ``propensities`` are the original decision's; off-policy evaluation skips replays).
        """
        if self.log is None or not choice.layers:
            return
        now = self.clock()
        exposure_id = exposure_id or uuid.uuid4().hex
        for layer in choice.layers:
            reason = None if served is None else fallback_reason(choice, layer, served, degraded)
            try:
                self.log.log_exposure(
                    str(user_id), layer.experiment, FALLBACK if reason else layer.variant, request_id, now, items,
                    layer=layer.layer, is_holdout=layer.is_holdout,
                    assigned_variant=layer.variant if reason else None, fallback_reason=reason,
                    propensities=propensities, degraded=list(degraded) or None, exposure_id=exposure_id,
                    cached_from=cached_from,
                )
            except OSError as e:  # a full or read-only disk must not fail the recommendation itself
                log.warning("exposure log write failed: %s", e)

    def log_outcome(
        self, user_id: int, event_type: str, value: float, item_id: int | None, event_id: str | None = None,
        ts: float | None = None,
    ) -> None:
        """Log an outcome once per ``event_id``: call it only after ingestion accepted the event, and pass
        the client's event id so that a retried event is not counted twice, and the event's validated time
        ``ts`` (ingestion clamped it to the allowed clock skew), not the time it reached this log."""
        if self.log is None:
            return
        now = self.clock()
        try:
            self.log.log_outcome(str(user_id), event_type, value, now if ts is None else ts, item_id,
                                 event_id=event_id, received_ts=now)
        except OSError as e:
            log.warning("outcome log write failed: %s", e)
