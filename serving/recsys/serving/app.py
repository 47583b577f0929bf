"""Serve application builder: ``recsys.serving.app:build_app`` (``serve run``, KubeRay ``serveConfigV2``).

Graph (deployment handles, no HTTP hops between stages)::

    Ingress (FastAPI) ──handle──> RetrievalShard0 .. RetrievalShard{S-1}   (scatter-gather)
                      ──handle──> Ranker                                    (@serve.batch)

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
from recsys.serving.ingress import Ingress
from recsys.serving.ranker import BatchedRanker
from recsys.serving.retrieval_shard import RetrievalShard
from recsys.serving.rollout import RolloutSpec, experiment_variant_versions


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


def build_app(args: dict[str, Any] | ServingConfig | None = None, rollout: RolloutSpec | None = None) -> Application:
    """Build the Serve application from builder ``args`` (validated as :class:`ServingConfig`).

    ``args["rollout"]`` (or ``rollout``) is the :class:`RolloutSpec` delivered to every replica as
    ``user_config``; changing only it is an in-place update of the running app (see rollout.py).
    """
    if isinstance(args, dict) and "rollout" in args:
        args = dict(args)
        rollout = args.pop("rollout")
    cfg = parse_args(args)
    spec = rollout_spec(cfg, rollout)
    user_config = spec.model_dump(mode="json")
    cfg_dict = cfg.model_dump(mode="json")
    version = code_version(cfg_dict)
    shards = [
        serve.deployment(RetrievalShard)
        .options(
            name=shard_name(i),
            num_replicas=cfg.shard_replicas,
            ray_actor_options={"num_cpus": cfg.shard_num_cpus},
            max_ongoing_requests=32,
            health_check_period_s=10,
            user_config=user_config,
        )
        .options(version=version, _internal=True)
        .bind(cfg_dict, i, cfg.num_shards)
        for i in range(cfg.num_shards)
    ]
    ranker = (
        serve.deployment(BatchedRanker)
        .options(
            name="Ranker",
            num_replicas=cfg.ranker_replicas,
            ray_actor_options={"num_cpus": cfg.ranker_num_cpus},
            max_ongoing_requests=64,
            user_config=user_config,
        )
        .options(version=version, _internal=True)
        .bind(cfg_dict)
    )
    return (
        serve.deployment(Ingress)
        .options(
            name="Ingress",
            num_replicas=cfg.ingress_replicas,
            ray_actor_options={"num_cpus": cfg.ingress_num_cpus},
            max_ongoing_requests=64,
            user_config=user_config,
        )
        .options(version=version, _internal=True)
        .bind(cfg_dict, shards, ranker)
    )
