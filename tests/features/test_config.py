"""Redis URL -> Feast connection string (the db must survive the translation)."""

import pytest
from pydantic import ValidationError

from recsys.features.config import FeatureStoreConfig, parse_redis_url


def test_parse_redis_url_keeps_db_password_and_tls():
    assert parse_redis_url("redis://127.0.0.1:6379/15") == {"host": "127.0.0.1", "port": 6379, "db": 15}
    kw = parse_redis_url("rediss://:s3cret@cache.internal:6380/2")
    assert kw == {"host": "cache.internal", "port": 6380, "db": 2, "password": "s3cret", "ssl": True}
    assert parse_redis_url("redis://localhost")["db"] == 0


def test_feast_connection_string_has_db_and_timeouts():
    cfg = FeatureStoreConfig(redis_url="redis://127.0.0.1:6379/15", connect_timeout_s=0.25)
    s = cfg.feast_connection_string(socket_timeout=0.5)
    assert s == "127.0.0.1:6379,db=15,socket_connect_timeout=0.25,socket_timeout=0.5"


@pytest.mark.parametrize("url", ["http://x:6379/0", "redis://", "redis://host:6379/notadb"])
def test_bad_redis_url_names_the_field(url):
    with pytest.raises(ValidationError, match="redis_url"):
        FeatureStoreConfig(redis_url=url)


def test_feast_parses_our_connection_string_with_the_db():
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(
        FeatureStoreConfig(redis_url="redis://127.0.0.1:6379/15").feast_connection_string())
    assert nodes == [{"host": "127.0.0.1", "port": "6379"}]
    assert params["db"] == 15 and params["socket_connect_timeout"] == 0.3
