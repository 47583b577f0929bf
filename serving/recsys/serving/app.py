"""Serve application builder: ``recsys.serving.app:build_app`` (``serve run``, KubeRay ``serveConfigV2``).

Graph (deployment handles, no HTTP hops between stages)::

    Ingress (FastAPI) ──handle──> RetrievalShard0 .. RetrievalShard{S-1}   (scatter-gather)
                      ──handle──> Ranker                                    (@serve.batch)
                      (or ──HTTP──> KServe V2 ranker predictor, when ``ranker_endpoint`` is set)

``stages.ranking.placement: local`` (the default) scores in the ingress process instead of the
Ranker deployment; ``stages.retrieval.placement: local`` (only with ``num_shards: 1``) searches there.

Deployment names are stable (``Ingress``, ``Ranker``, ``RetrievalShard<i>``) so a Serve config
YAML / Helm values can override their replicas and resources by name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from typing import Any

from pydantic import ValidationError
from ray import serve
from ray.serve import Application

from recsys.serving.config import ServingConfig
from recsys.serving.deployments.ingress import Ingress
from recsys.serving.deployments.ranker import BatchedRanker
from recsys.serving.deployments.retrieval_shard import RetrievalShard
from recsys.serving.models.rollout import RolloutRefused, RolloutSpec
from recsys.serving.pipeline.experiments import experiment_variant_versions


class ServingConfigError(ValueError):
    """build_app args are invalid; the message names the field."""


REDIS_URL_ENV = ("RECSYS_REDIS_URL", "REDIS_URL")
"""Where a Redis URL kept out of the Serve config (a Kubernetes Secret) reaches the app."""


def parse_args(args: dict[str, Any] | ServingConfig | None) -> ServingConfig:
    """Validate builder args; ``redis_url`` falls back to the environment so secrets stay out of the config."""
    if isinstance(args, ServingConfig):
        return args
    args = dict(args or {})
    if "redis_url" not in args:
        import os

        env_url = next((os.environ[k] for k in REDIS_URL_ENV if os.environ.get(k)), None)
        if env_url:
            args["redis_url"] = env_url
    try:
        return ServingConfig(**args)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "args"
        raise ServingConfigError(f"invalid serving arg '{field}': {first['msg']}") from e


def shard_name(i: int) -> str:
    return f"RetrievalShard{i}"


INNER_LOGGING = {"enable_access_log": False}
"""Serve's own per-call INFO access line is off on every deployment: on 2 cores writing it costs
time on each hop; the ingress writes one JSON line per request itself (``access_log_sample``)."""


def code_version(cfg_dict: dict[str, Any]) -> str:
    """A stable deployment version: same package + same config -> a user_config change updates in place.

    Without it Serve gives every imperative ``serve.run`` a random version, so even a pure
    ``user_config`` change (a rollout) would restart every replica.
    """
    try:
        pkg = importlib.metadata.version("recsys-platform")
    except importlib.metadata.PackageNotFoundError:
        pkg = "dev"
    blob = json.dumps({"package": pkg, "config": cfg_dict}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rollout_spec(cfg: ServingConfig, rollout: dict[str, Any] | RolloutSpec | None = None) -> RolloutSpec:
    """The ``user_config`` every deployment gets: explicit ``rollout`` args, else the config's versions."""
    if isinstance(rollout, RolloutSpec):
        return rollout
    if rollout is not None:
        try:
            return RolloutSpec(**rollout)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(x) for x in first["loc"]) or "rollout"
            raise ServingConfigError(f"invalid serving arg 'rollout.{field}': {first['msg']}") from e
    return RolloutSpec(retrieval_version=cfg.retrieval_version, ranking_version=cfg.ranking_version,
                       preload=experiment_variant_versions(cfg.experiments_config))


def build_graph(cfg: ServingConfig, ingress_cls: type, shard_cls: type, ranker_cls: type,
                user_config: dict[str, Any] | None = None, version: str | None = None,
                **ingress_kwargs: Any) -> Application:
    """Ingress -> shard deployments + ranker deployment, with the deployment options of ``cfg``.

    A stage placed ``local`` (``cfg.stages``) is not deployed: the ingress gets ``None`` for it and
    builds the stage in its own process. Shared by :func:`build_app` and the no-op graph of
    ``benchmarks/serve_overhead.py``, so the framework-floor baseline has exactly our topology,
    replica counts, CPUs, queue limits and logging (the no-op has no rollout ``user_config``).
    """
    cfg_dict = cfg.model_dump(mode="json")
    extra: dict[str, Any] = {"logging_config": INNER_LOGGING}
    if user_config is not None:
        extra["user_config"] = user_config

    def versioned(d: Any) -> Any:
        return d.options(version=version, _internal=True) if version else d

    shards = None
    if cfg.stages.retrieval.placement == "deployment":
        shards = [
            versioned(serve.deployment(shard_cls).options(
                name=shard_name(i),
                num_replicas=cfg.shard_replicas,
                ray_actor_options={"num_cpus": cfg.shard_num_cpus},
                max_ongoing_requests=32,
                health_check_period_s=10,
                **extra,
            )).bind(cfg_dict, i, cfg.num_shards)
            for i in range(cfg.num_shards)
        ]
    ranker = None
    if cfg.stages.ranking.placement == "deployment" and not cfg.ranker_endpoint:
        ranker = versioned(serve.deployment(ranker_cls).options(
            name="Ranker",
            num_replicas=cfg.ranker_replicas,
            ray_actor_options={"num_cpus": cfg.ranker_num_cpus},
            max_ongoing_requests=64,
            **extra,
        )).bind(cfg_dict)
    return versioned(serve.deployment(ingress_cls).options(
        name="Ingress",
        num_replicas=cfg.ingress_replicas,
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus},
        max_ongoing_requests=64,
        **extra,
    )).bind(cfg_dict, shards, ranker, **ingress_kwargs)


def build_app(args: dict[str, Any] | ServingConfig | None = None, rollout: RolloutSpec | None = None) -> Application:
    """Build the Serve application from builder ``args`` (validated as :class:`ServingConfig`).

    ``args["rollout"]`` (or ``rollout``) is the :class:`RolloutSpec` delivered to every replica as
    ``user_config``; changing only it is an in-place update of the running app (see rollout.py).
    The ingress gets :func:`redeploy` injected (so models/rollout.py imports nothing of the project).
    """
    if isinstance(args, dict) and "rollout" in args:
        args = dict(args)
        rollout = args.pop("rollout")
    cfg = parse_args(args)
    user_config = rollout_spec(cfg, rollout).model_dump(mode="json")
    return build_graph(cfg, Ingress, RetrievalShard, BatchedRanker, user_config,
                       code_version(cfg.model_dump(mode="json")), redeploy=redeploy)


def redeploy(cfg: Any, spec: RolloutSpec, app_name: str) -> None:
    """Redeploy the running app with ``spec`` as every deployment's ``user_config`` (blocking).

    The deployments' init args are rebuilt from the same config, so Serve sees only a
    ``user_config`` change and updates every replica in place. An app deployed from a Serve config
    file (KubeRay's ``serveConfigV2``) cannot be changed from Python: roll out there by changing the
    config (Helm values ``serving.rollout``) instead; Serve's refusal is passed on as the error.
    """
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    app = (details.get("applications") or {}).get(app_name) or {}
    if app.get("source") == "declarative":
        raise RolloutRefused("this app was deployed from a Serve config file: change user_config there "
                             "(Helm values serving.rollout) to roll out")
    serve.run(build_app(cfg, rollout=spec), name=app_name, route_prefix=app.get("route_prefix") or "/",
              blocking=False)

