"""Adding a candidate source is one module plus one config entry (pipeline/candidates/registry.py).

The toy source below is written as a user would write it: a module with ``load(store, version)``
returning an object with ``candidates(history, k)``, and a ``candidate_sources`` entry in the serving
config. Nothing else in serving is touched, and its items reach the HTTP response tagged with the
entry's name, its version is in ``model_versions`` (so also in the result-cache fingerprint).
"""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest
from fastapi.testclient import TestClient

from .conftest import base_args, build_store

TOY_MODULE = textwrap.dedent('''
    """A toy candidate source: a fixed list of items from the model store."""
    import json

    import numpy as np


    class ToySource:
        def __init__(self, item_ids):
            self.item_ids = np.asarray(item_ids, np.int64)

        def candidates(self, history, k):
            ids = self.item_ids[:k]
            return ids, np.linspace(1.0, 0.5, len(ids)).astype(np.float32)


    def load(store, model_version):
        return ToySource(json.loads((store.local_path(model_version) / "items.json").read_text()))
''')


@pytest.fixture
def toy_setup(small_dataset, tmp_path, monkeypatch, redis_url):
    store, catalog = build_store(small_dataset, tmp_path)
    toy_items = small_dataset.items["item_id"].to_numpy()[-4:].tolist()  # the catalog's last items
    with store.write_version("toy_model", "t1", kind="baseline") as d:
        (d / "items.json").write_text(json.dumps(toy_items))
    store.promote("toy_model", "t1")
    (tmp_path / "toy_source_mod.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = base_args(store, catalog, redis_url, tmp_path / "exposures")
    # only ANN's single best and the toy source propose items, so the answer is mostly the toy's
    args.update(retrieval_k=1, knn_k=0, popularity_k=0, sequential_k=0, content_k=0, cache={"enabled": False},
                candidate_sources={"toy": {"module": "toy_source_mod", "model": "toy_model", "k": 4}})
    return args, toy_items


def test_a_toy_source_from_one_module_and_one_config_entry_is_served(toy_setup):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    args, toy_items = toy_setup
    cfg = ServingConfig(**args)
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    asyncio.run(svc.start())
    with TestClient(create_api(svc)) as c:
        body = c.post("/v1/recommendations", json={"user_id": 1, "n": 5}).json()
    assert body["model_versions"]["toy"] == "t1"
    toy_served = [it for it in body["items"] if "toy" in it["sources"]]
    assert len(toy_served) >= 3, body["items"]
    assert {it["item_id"] for it in toy_served} <= set(toy_items)


def test_source_name_of_a_built_in_is_refused():
    from pydantic import ValidationError

    from recsys.serving.config import ServingConfig

    with pytest.raises(ValidationError, match="taken by built-in sources"):
        ServingConfig(candidate_sources={"popularity": {"module": "x", "model": "y"}})
