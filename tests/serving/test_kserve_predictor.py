"""KServe V2 round trip for the ranker predictor, in-process through KServe's own FastAPI app."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def kserve_client(serving_store):
    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer

    from recsys.serving.kserve_predictor import RankerPredictor

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
