"""Serving's side of experiment integrity (issue 23), in-process service, real Redis, no Ray:

* targeting attributes come from the user's stored features (or a context signed with the server's key),
  never from the raw request body: a client cannot opt into a segment;
* every exposure gets a server-generated ``exposure_id`` (the client's X-Request-ID stays in
  ``request_id``), so a reused client id does not merge two decisions;
* degraded reasons are logged for every arm, not only for variants that name a version;
* outcomes carry the event's own time (ingest clamps it to the allowed clock skew), not the time serving
  logged them, so a queued event does not count as after a later exposure.
"""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from tests.serving.test_experiment_layers import _service

TARGETED = """
version: 1
layers: [{name: onboarding}, {name: loyalty}]
experiments:
  - name: onboarding
    layer: onboarding
    salt: onboarding-1
    targeting: {segment: new}
    variants:
      - {name: control, weight: 50}
      - {name: treatment, weight: 50, reranking: {mmr_lambda: 0.2}}
  - name: loyalty
    layer: loyalty
    salt: loyalty-1
    targeting: {segment: returning}
    variants:
      - {name: control, weight: 50}
      - {name: treatment, weight: 50, reranking: {max_per_genre: 2}}
"""


def _setup(serving_args, tmp_path, **overrides):
    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text(TARGETED)
    log_dir = tmp_path / "exposures"
    svc = _service(serving_args, experiments_config=str(exp_file), exposure_log_dir=str(log_dir), **overrides)
    return svc, log_dir


def test_a_client_cannot_opt_into_a_segment(serving_args, tmp_path):
    from recsys.experiments.exposure_log import read_log
    from recsys.serving.http.api import create_api

    svc, log_dir = _setup(serving_args, tmp_path)
    users = list(range(1, 41))
    # the test store's online rows hold no history: to the server every one of these users is new
    assert not any(svc.hydration.features.fetch_user(u).recent_item_ids for u in users)
    with TestClient(create_api(svc)) as c:
        for user in users:  # each claims to be returning, and a segment key the router would read
            r = c.post("/v1/recommendations", json={"user_id": user, "n": 5, "context": {"segment": "returning"}})
            assert r.status_code == 200, r.text
    svc.experiments.log.flush()
    ex = read_log(log_dir).exposures
    assert "loyalty" not in set(ex["experiment"])  # nobody opted into the returning segment (was: all 40)
    assert ex[ex["experiment"] == "onboarding"]["unit_id"].nunique() == len(users)  # the stored segment holds


def test_a_signed_context_may_set_targeting_attributes(serving_args, tmp_path):
    from recsys.serving.pipeline.experiments import sign_targeting

    svc, _ = _setup(serving_args, tmp_path, targeting_key="k-123")
    stored = svc.hydration.features.fetch_user(5)
    signed = sign_targeting("k-123", 5, {"segment": "returning"})
    assert svc.experiments.targeting_attributes(5, stored, {"targeting": signed}) == {"segment": "returning"}
    forged = {**signed, "attributes": {"segment": "returning", "country": "x"}}
    assert svc.experiments.targeting_attributes(5, stored, {"targeting": forged}) == {"segment": "new"}
    other_user = sign_targeting("k-123", 6, {"segment": "returning"})  # signed for someone else
    assert svc.experiments.targeting_attributes(5, stored, {"targeting": other_user}) == {"segment": "new"}
    wrong_key = sign_targeting("guess", 5, {"segment": "returning"})
    assert svc.experiments.targeting_attributes(5, stored, {"targeting": wrong_key}) == {"segment": "new"}
    assert svc.experiments.targeting_attributes(5, None, {"segment": "returning"}) == {}  # store down: nothing


def test_exposure_ids_are_generated_by_the_server(serving_args, tmp_path):
    from recsys.experiments.exposure_log import read_log
    from recsys.serving.http.api import create_api

    svc, log_dir = _setup(serving_args, tmp_path)
    with TestClient(create_api(svc)) as c:
        for _ in range(3):
            r = c.post("/v1/recommendations", json={"user_id": 987_654_321, "n": 5}, headers={"X-Request-ID": "same"})
            assert r.json()["request_id"] == "same"  # the client's id still comes back
    svc.experiments.log.flush()
    ex = read_log(log_dir).exposures
    assert len(ex) == 3 and set(ex["request_id"]) == {"same"}
    assert ex["exposure_id"].nunique() == 3 and "same" not in set(ex["exposure_id"])


def test_degraded_reasons_are_logged_for_every_arm(serving_args, tmp_path):
    from recsys.experiments.exposure_log import read_log

    svc, log_dir = _setup(serving_args, tmp_path)
    choice = svc.experiments.assign(987_654_321, {"segment": "new"})  # onboarding only
    assert choice.layers and choice.layers[0].variant in ("control", "treatment")
    svc.experiments.log_exposure(987_654_321, choice, "r1", [1, 2], served={"retrieval": "v1"},
                                 degraded=["retrieval_shard_unavailable"])
    svc.experiments.log.flush()
    row = read_log(log_dir).exposures.iloc[0]
    assert list(row["degraded"]) == ["retrieval_shard_unavailable"]  # control arms too, not only versioned ones


def test_outcomes_carry_the_event_time_not_the_logging_time(serving_args, tmp_path):
    from recsys.experiments.exposure_log import read_log

    svc, log_dir = _setup(serving_args, tmp_path)
    happened = time.time() - 600  # a click queued for ten minutes on the client
    svc.record_event({"user_id": 5, "item_id": 7, "event_type": "click", "ts": happened, "rating": None,
                      "event_id": "evt-queued"})
    svc.experiments.log.flush()
    outcome = read_log(log_dir).outcomes.iloc[0]
    assert abs(outcome["ts"] - happened) < 1e-3  # was the time serving logged it (~600 s later)
    assert outcome["received_ts"] >= happened + 599


def test_a_cached_answer_is_logged_with_the_original_decisions_propensities(serving_args, tmp_path):
    """Issue 23: a response replayed from the result cache was logged without propensities. Now it carries
    the original decision's (unrounded) propensities and ``cached_from`` = that decision's exposure id, and
    off-policy evaluation skips replays (whether one happens depends on the user's events since)."""
    import uuid

    import pandas as pd

    from recsys.experiments.exposure_log import read_log
    from recsys.experiments.ope import decisions_from_log
    from recsys.serving.http.api import create_api

    svc, log_dir = _setup(serving_args, tmp_path, exploration_rate=1.0, exploration_slot=1,
                          cache={"key_prefix": f"test:rc:{uuid.uuid4().hex[:8]}"})
    assert svc.cache.enabled
    req = {"user_id": 987_654_321, "n": 5}
    with TestClient(create_api(svc)) as c:
        first = c.post("/v1/recommendations", json=req).json()
        second = c.post("/v1/recommendations", json=req).json()
    assert first["cached"] is False and second["cached"] is True
    assert [it["item_id"] for it in second["items"]] == [it["item_id"] for it in first["items"]]
    assert any("exploration" in it["sources"] for it in first["items"])  # a slot with a propensity < 1
    svc.experiments.log.flush()
    ex = read_log(log_dir).exposures.sort_values("ts", kind="stable")
    original, replay = ex.iloc[0], ex.iloc[1]
    assert isinstance(original["propensities"], list) and min(original["propensities"]) < 1.0
    assert replay["propensities"] == original["propensities"]  # the same floats, not re-rounded
    assert replay["cached_from"] == original["exposure_id"] and replay["exposure_id"] != original["exposure_id"]
    assert not isinstance(original["cached_from"], str)
    target = pd.DataFrame({"item_id": [str(i) for i in original["items"]], "probability": 0.5})
    d = decisions_from_log(ex, read_log(log_dir).outcomes, target)
    assert d.n_requests == 1 and d.skipped_cached == 1 and d.skipped_without_propensities == 0
