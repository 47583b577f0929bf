"""Stage placement and Serve speed switches: config checks and what the ingress builds (no Ray needed)."""

from __future__ import annotations

import pytest


def test_default_placement_and_sharded_retrieval_stays_deployed(serving_args):
    from recsys.serving.app import ServingConfigError, parse_args

    cfg = parse_args(serving_args)
    assert cfg.stages.ranking.placement == "local" and cfg.stages.retrieval.placement == "deployment"
    with pytest.raises(ServingConfigError, match="stages.retrieval.placement"):
        parse_args({**serving_args, "num_shards": 2, "stages": {"retrieval": {"placement": "local"}}})
    with pytest.raises(ServingConfigError, match="stages.reranking.placement"):
        parse_args({**serving_args, "stages": {"reranking": {"placement": "deployment"}}})
    with pytest.raises(ServingConfigError, match="stages.ranking.placement"):
        parse_args({**serving_args, "stages": {"ranking": {"placement": "gpu"}}})


def test_local_stages_are_real_in_process_objects(serving_args):
    """With nothing deployed for them, the ingress builds the shard and ranker in its own process."""
    import asyncio

    import numpy as np

    from recsys.serving.app import parse_args
    from recsys.serving.deployments.ingress import local_stages
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.pipeline.scoring.kserve_client import KServeRankerClient

    cfg = parse_args({**serving_args, "num_shards": 1, "stages": {"retrieval": {"placement": "local"}}})
    shards, ranker = local_stages(cfg, None, None)
    assert isinstance(shards[0], RetrievalShard) and isinstance(ranker, Ranker)
    rows, scores = asyncio.run(shards[0].search(np.ones((1, 16), np.float32) / 4, 5, cfg.retrieval_version or
                                                shards[0].core.load(None)))
    assert rows.shape == (1, 5) and np.all(np.diff(scores[0]) <= 1e-6)  # best first
    cfg = parse_args({**serving_args, "ranker_endpoint": "http://127.0.0.1:9"})
    assert isinstance(local_stages(cfg, ["handle"], None)[1], KServeRankerClient)  # the endpoint wins


def test_serve_speed_env_flags():
    from recsys.serving.cli.serve import serve_speed_env

    assert serve_speed_env(True, False) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    assert serve_speed_env(False, False) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}


def test_haproxy_defaults_to_on_only_for_network_facing_hosts(monkeypatch, tmp_path):
    """HAProxy mode binds replica ports on all interfaces: never switched on silently for a loopback server."""
    import os

    from recsys.serving.cli.serve import ServeCliError, serve_speed_env

    fake = tmp_path / "haproxy"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert serve_speed_env(True, None, "0.0.0.0").get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in serve_speed_env(True, None, "127.0.0.1")
    assert serve_speed_env(True, True, "127.0.0.1")["RAY_SERVE_ENABLE_HA_PROXY"] == "1"  # explicit wins
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in serve_speed_env(True, False, "0.0.0.0")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in serve_speed_env(True, None, "0.0.0.0")  # not installed: proxy
    try:
        serve_speed_env(True, True, "0.0.0.0")
    except ServeCliError as e:
        assert "haproxy" in str(e)
    else:
        raise AssertionError("--haproxy without the binary must be refused")


def test_serve_start_help_lists_speed_flags():
    from click.testing import CliRunner

    from recsys.serving.cli.serve import cli

    out = CliRunner().invoke(cli, ["start", "--help"]).output
    assert "--throughput-optimized / --no-throughput-optimized" in out and "--haproxy" in out
