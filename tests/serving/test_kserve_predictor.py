"""KServe V2 round trip for the ranker predictor, in-process through KServe's own FastAPI app."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def kserve_client(serving_store):
    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer

    from recsys.serving.deployments.kserve_predictor import RankerPredictor

    store, _ = serving_store
    model = RankerPredictor("ranker", store.root)
    model.load()
    server = ModelServer(http_port=0, enable_grpc=False)
    server.register_model(model)
    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension, http_port=0)
    rest.create_application()  # registers KServe's V1/V2 routes on its module-level FastAPI app
    import kserve.model_server

    with TestClient(kserve.model_server.app) as client:
        yield client, model


def test_v2_metadata_and_ready(kserve_client):
    client, _ = kserve_client
    assert client.get("/v2/models/ranker/ready").status_code == 200


def test_v2_infer_round_trip_matches_torchscript(kserve_client):
    client, model = kserve_client
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(4, 2)).astype(np.float32)
    sparse = rng.integers(0, 1024, size=(4, 1)).astype(np.int64)
    body = {"inputs": [
        {"name": "dense", "datatype": "FP32", "shape": [4, 2], "data": dense.ravel().tolist()},
        {"name": "sparse", "datatype": "INT64", "shape": [4, 1], "data": sparse.ravel().tolist()},
    ]}
    r = client.post("/v2/models/ranker/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "scores" and out["shape"] == [4]
    expected = model.core.score(dense, sparse, model.version)
    np.testing.assert_allclose(np.asarray(out["data"], np.float32), expected, rtol=1e-5, atol=1e-5)


def test_v2_bad_shape_is_400(kserve_client):
    client, _ = kserve_client
    body = {"inputs": [
        {"name": "dense", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]},
        {"name": "sparse", "datatype": "INT64", "shape": [1, 1], "data": [1]},
    ]}
    r = client.post("/v2/models/ranker/infer", json=body)
    assert r.status_code == 400 and "dense" in r.text


# ------------------------------------------------------------------ ranker_endpoint: the pipeline over HTTP
@pytest.fixture(scope="module")
def predictor_url(serving_store):
    """The predictor as its own process (``python -m recsys.serving.deployments.kserve_predictor``) on a free port."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.serving.conftest import free_port

    store, _ = serving_store
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recsys.serving.deployments.kserve_predictor", "--model_store_uri",
                             str(store.root), "--http_port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"predictor exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/models/ranker/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("predictor not ready after 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def test_ranker_endpoint_config_is_accepted_and_checked(serving_args):
    from recsys.serving.app import ServingConfigError, parse_args

    assert parse_args({**serving_args, "ranker_endpoint": "http://ranker.ns.svc:8080"}).ranker_endpoint
    assert parse_args({**serving_args, "ranker_endpoint": ""}).ranker_endpoint is None  # Helm's "unset"
    with pytest.raises(ServingConfigError, match="ranker_endpoint"):
        parse_args({**serving_args, "ranker_endpoint": "ftp://nope"})


def test_pipeline_ranks_through_kserve_predictor_like_the_in_graph_ranker(serving_args, predictor_url,
                                                                           small_dataset):
    """Same users, same shards: the KServe path serves the in-graph ranker's answers, not a fallback."""
    import asyncio

    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.scoring.kserve_client import KServeRankerClient, RankerEndpointError
    from recsys.serving.pipeline.service import RecommendationService

    base = {**serving_args, "cache": {"enabled": False}, "feature_timeout_s": 5.0}  # parity, not timeouts
    cfg_graph = ServingConfig(**base)
    cfg_http = ServingConfig(**base, ranker_endpoint=predictor_url)
    shards = [RetrievalShard(cfg_graph, i, cfg_graph.num_shards) for i in range(cfg_graph.num_shards)]
    users = small_dataset.users["user_id"].to_numpy()[:8].tolist()

    async def run():
        client = KServeRankerClient(cfg_http.ranker_endpoint, cfg_http.ranker_endpoint_model)
        graph = RecommendationService(cfg_graph, shards, Ranker(cfg_graph))
        http = RecommendationService(cfg_http, shards, client)
        await graph.start()
        await http.start()
        pairs = [(await graph.recommend(RecommendationRequest(user_id=u, n=10)),
                  await http.recommend(RecommendationRequest(user_id=u, n=10))) for u in users]
        with pytest.raises(RankerEndpointError, match="version"):
            await client.score(np.zeros((2, 2), np.float32), np.zeros((2, 1), np.int64), "not-the-served-one")
        await client.aclose()
        return pairs

    for a, b in asyncio.run(run()):
        assert not b.degraded, b.degraded_reasons
        assert b.model_versions["ranking"] == a.model_versions["ranking"]
        assert [it.item_id for it in b.items] == [it.item_id for it in a.items]
        np.testing.assert_allclose([it.score for it in b.items], [it.score for it in a.items], rtol=1e-5, atol=1e-6)
