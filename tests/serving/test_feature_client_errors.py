"""Which feature-store failures degrade a request and which surface: real Redis, real online client.

Dependency errors (Redis down) -> FeatureStoreUnavailable (the request degrades, 200); bytes in Redis
that do not decode -> FeatureReadError (degrades, logged); a bug in the client (TypeError, KeyError)
propagates, so the API answers 500 and a test notices instead of counting a degraded answer as success.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from recsys.serving.config import ServingConfig
from recsys.serving.pipeline.features.client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable


def _gateway(redis_url: str) -> FeatureGateway:
    return FeatureGateway(ServingConfig(redis_url=redis_url, feature_timeout_s=0.5))


def test_redis_down_is_unavailable(closed_redis_url):
    with pytest.raises(FeatureStoreUnavailable):
        _gateway(closed_redis_url).fetch(1, [1, 2])


def test_undecodable_bytes_in_redis_are_a_read_error(redis_url):
    gateway = _gateway(redis_url)
    assert gateway.mode == "online"
    client = gateway._client
    user = 900_000_000 + uuid.uuid4().int % 10**8
    key = client.layout.key("user_id", user)
    field = next(f for _view, _name, kind, f in client._user_fields if kind != "ts")
    r = redis.Redis.from_url(redis_url)
    try:
        r.hset(key, field, b"\xff\xff\xff not a protobuf")
        with pytest.raises(FeatureReadError):
            gateway.fetch(user, [1, 2])
    finally:
        r.delete(key)
    assert gateway.fetch(user, [1, 2]).items is not None  # the same user without the bad row reads fine


def test_a_bug_in_the_client_is_not_swallowed(redis_url):
    class _Buggy:
        def fetch(self, user_id, item_ids):
            return {}["missing"]  # KeyError: a programming error, not an outage

    gateway = _gateway(redis_url)
    gateway._client = _Buggy()
    with pytest.raises(KeyError):
        gateway.fetch(1, [1])
