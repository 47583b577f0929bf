"""The batched retrieval hop: concurrent requests' queries share one remote call per shard, same answers.

Through a real Serve deployment of ``RetrievalShard`` (a real DeploymentHandle, so :class:`ShardClient`
batches), against the plain shard class called once per query.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest


@pytest.fixture(scope="module")
def cfg(serving_args):
    from recsys.serving.config import ServingConfig

    return ServingConfig(**serving_args)


def _queries(cfg, n: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(7)
    from recsys.platform.model_store import ModelStore
    from recsys.serving.models.artifacts import load_retrieval, resolve_version

    store = ModelStore(cfg.model_store_uri)
    art = load_retrieval(store, resolve_version(store, cfg.retrieval_model, "v1"), with_tower=False)
    q = rng.normal(size=(n, art.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ks = [int(k) for k in rng.integers(1, 60, size=n)]  # every request its own k (retrieval_k + its seen count)
    return q, ks


def test_search_many_equals_one_search_per_query(cfg):
    from recsys.serving.deployments.retrieval_shard import RetrievalShardCore

    core = RetrievalShardCore(cfg, 1, 2)
    q, ks = _queries(cfg, 9)
    rows, scores, lengths = core.search_many(q, np.array(ks), core.load("v1"))
    ends = np.cumsum(lengths)
    for i, k in enumerate(ks):
        r, s = core.search(q[i:i + 1], k, "v1")
        np.testing.assert_array_equal(rows[ends[i] - lengths[i]:ends[i]], r[0])
        np.testing.assert_array_equal(scores[ends[i] - lengths[i]:ends[i]], s[0])


def test_concurrent_searches_share_calls_through_a_serve_handle(ray_cluster, cfg, serving_args):
    from ray import serve

    from recsys.serving.deployments.retrieval_shard import RetrievalShard, RetrievalShardCore
    from recsys.serving.pipeline.candidates.shard_client import ShardClient
    from recsys.serving.pipeline.state import Target

    handle = serve.run(serve.deployment(RetrievalShard).options(name="BatchShard").bind(serving_args, 0, 2),
                       name="shard_batching", route_prefix=None)
    try:
        target = Target.wrap(handle)
        assert target.is_handle
        client = ShardClient(target)
        q, ks = _queries(cfg, 24)

        async def run():
            return await asyncio.gather(*(client.search(q[i:i + 1], ks[i], "v1") for i in range(len(ks))))

        got = asyncio.run(run())
        core = RetrievalShardCore(cfg, 0, 2)
        for i, (rows, scores) in enumerate(got):
            r, s = core.search(q[i:i + 1], ks[i], core.load("v1"))
            np.testing.assert_array_equal(rows, r)
            np.testing.assert_array_equal(scores, s)
        assert client.queries == 24
        # the first query goes out alone at once; the 23 that queued behind it share the next call(s)
        assert client.calls <= 3, client.calls
        # a failing shard fails every query of the batch (each request then degrades on its own)
        with pytest.raises(Exception):  # noqa: B017 - Ray wraps the shard's error in its own type
            asyncio.run(client.search(q[:1], 5, "no-such-version"))
    finally:
        serve.delete("shard_batching")
