"""Every experiment layer is applied in serving (in-process service, no Ray).

* a second-layer experiment sees users independently of the first layer's assignment (it used to see
  only the users the first layer left out, because serving called ``assign_primary``);
* its re-ranking parameters (the schema shared with the experiment config) reach the re-ranker;
* one exposure per layer is logged, and a variant whose version is missing is logged as ``fallback``.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from scipy import stats
from starlette.testclient import TestClient

LAYERED = """
version: 1
layers: [{name: models}, {name: reranking}]
experiments:
  - name: models_exp
    layer: models
    layer_share: 50
    salt: layers-a
    variants:
      - {name: control, weight: 50}
      - {name: treatment, weight: 50, retrieval_version: v1}
  - name: rerank_exp
    layer: reranking
    salt: layers-b
    variants:
      - {name: control, weight: 50}
      - {name: diverse, weight: 50, reranking: {mmr_lambda: 0.0, max_per_genre: 1}}
"""


def _service(args: dict, **overrides):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.pipeline.service import RecommendationService

    # a generous feature timeout: on a loaded CI box 0.2 s Redis round trips time out and degrade the answer
    cfg = ServingConfig(**{**args, "feature_timeout_s": 5.0, **overrides})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    asyncio.run(svc.start())
    return svc


def test_second_layer_sees_users_independently_of_the_first(serving_args, tmp_path):
    from recsys.experiments.exposure_log import read_log
    from recsys.serving.http.api import create_api
    from recsys.serving.http.schemas import RecommendationRequest

    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text(LAYERED)
    log_dir = tmp_path / "exposures"
    svc = _service(serving_args, experiments_config=str(exp_file), exposure_log_dir=str(log_dir))
    users = list(range(1, 241))
    with TestClient(create_api(svc)) as c:
        for user in users:
            body = c.post("/v1/recommendations", json={"user_id": user, "n": 5}).json()
            assert body["degraded"] is False, body["degraded_reasons"]
    svc.experiments.log.flush()
    ex = read_log(log_dir).exposures
    assert set(ex.variant) <= {"control", "treatment", "diverse"}  # nothing fell back
    per_layer = ex.pivot_table(index="unit_id", columns="layer", values="variant", aggfunc="first")
    assert len(per_layer) == len(users)
    # the reranking layer has no holes: every user is in it, whatever the models layer did with them
    assert per_layer["reranking"].notna().all()
    both = per_layer.dropna()
    assert 0.3 * len(users) < len(both) < 0.7 * len(users)  # models_exp owns half of its layer
    # independence: the reranking split does not depend on the models-layer variant (or its absence)
    first = per_layer["models"].fillna("none")
    table = np.array([[((first == a) & (per_layer["reranking"] == b)).sum() for b in ("control", "diverse")]
                      for a in ("none", "control", "treatment")])
    assert stats.chi2_contingency(table).pvalue > 0.001, table
    # one exposure per layer per request: the same request id appears in both layers' rows
    assert (ex.groupby("request_id")["layer"].nunique() == ex.groupby("request_id")["unit_id"].size()).all()
    # the second layer's re-ranking parameters reach the re-ranker, even for users in the first layer
    user = int(both.index[(both["reranking"] == "diverse").to_numpy()][0])
    choice = svc.experiments.assign(user, None)
    params = svc.reranking.params(RecommendationRequest(user_id=user, n=5), choice)
    assert (params.mmr_lambda, params.max_per_genre) == (0.0, 1)
    assert choice.layers[0].experiment == "models_exp" and choice.cache_key.count("|") == 1


def test_missing_variant_version_is_logged_as_fallback(serving_args, tmp_path):
    from recsys.experiments.exposure_log import read_log
    from recsys.serving.http.api import create_api

    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text(
        "version: 1\nexperiments:\n  - name: missing_v\n    salt: fb\n    variants:\n"
        "      - {name: control, weight: 50}\n"
        "      - {name: treatment, weight: 50, retrieval_version: v404}\n"
    )
    log_dir = tmp_path / "exposures"
    svc = _service(serving_args, experiments_config=str(exp_file), exposure_log_dir=str(log_dir))
    with TestClient(create_api(svc)) as c:
        bodies = [c.post("/v1/recommendations", json={"user_id": u, "n": 5}).json() for u in range(1, 31)]
    svc.experiments.log.flush()
    ex = read_log(log_dir).exposures.set_index("request_id")
    treated = [b for b in bodies if b["variant"] == "treatment"]
    assert treated and all(b["model_versions"]["retrieval"] == "v1" for b in treated)
    for b in treated:
        row = ex.loc[b["request_id"]]
        assert row["variant"] == "fallback" and row["assigned_variant"] == "treatment"
        assert "v404" in row["fallback_reason"]
    controls = [b["request_id"] for b in bodies if b["variant"] == "control"]
    assert controls and set(ex.loc[controls, "variant"]) == {"control"}


def test_fallback_reason_names_what_did_not_reach_the_answer():
    from recsys.serving.pipeline.experiments import LayerChoice, VariantChoice, fallback_reason

    a = LayerChoice("models", "t", "m", retrieval_version="v2")
    b = LayerChoice("rr", "d", "r", retrieval_version="v3", reranking={"mmr_lambda": 0.2})
    choice = VariantChoice("models", "t", "m", retrieval_version="v2", reranking={"mmr_lambda": 0.2}, layers=(a, b))
    assert fallback_reason(choice, a, {"retrieval": "v2"}, []) is None
    assert "not served" in fallback_reason(choice, a, {"retrieval": "v1"}, ["experiment_version_unavailable"])
    assert "overridden" in fallback_reason(choice, b, {"retrieval": "v2"}, [])  # layer 1 won the version


@pytest.mark.parametrize("field", ["mmr_lambda", "max_per_genre", "genre_window", "freshness_weight",
                                   "freshness_half_life_days"])
def test_reranking_schema_is_shared(field):
    """Experiment configs, serving defaults and the re-ranker read the same names."""
    from recsys.experiments.variant_params import RERANKING_FIELDS
    from recsys.serving.config import RerankDefaults
    from recsys.serving.pipeline.reranking.rules import RerankParams

    assert field in RERANKING_FIELDS and field in RerankDefaults.model_fields
    assert set(RERANKING_FIELDS) == set(RerankDefaults.model_fields) == set(RerankParams.__dataclass_fields__)
