"""`recsys capacity`: the model scales linearly with its inputs and the CLI prints it (bad input: exit 2)."""

from __future__ import annotations

from click.testing import CliRunner

from recsys.platform.capacity import estimate
from recsys.platform.cli import root


def test_estimate_scales_linearly_and_sizes_redis_from_users_and_items():
    small = estimate(1_000_000, 10_000, 100_000_000, 1_000)
    big = estimate(100_000_000, 1_000_000, 10_000_000_000, 1_000_000)
    ratio = sum(big.retrain_core_hours.values()) / sum(small.retrain_core_hours.values())
    assert 99 < ratio < 101  # every stage is linear in users/items/events, all 100x here
    m = big.assumptions.measured
    expected_gib = (100e6 * (m.user_hash_bytes + 100 * m.seen_bytes_per_item) + 1e6 * m.item_hash_bytes) * 1.5 / 2**30
    assert abs(big.redis_gib - expected_gib) < 1e-6
    assert big.serve_cores == -(-1_000_000 // m.serve_rps_per_core) and big.serve_cores > big.serve_cores_pipeline_only
    assert big.retrain_nodes * big.assumptions.cores_per_node >= big.retrain_cores


def test_cli_prints_the_model_and_rejects_bad_sizes():
    res = CliRunner().invoke(root, ["capacity", "--users", "100000000", "--items", "1000000", "--rps", "1000000"])
    assert res.exit_code == 0, res.output
    assert "Redis:" in res.output and "serving:" in res.output and "core-hours" in res.output
    bad = CliRunner().invoke(root, ["capacity", "--users", "0"])
    assert bad.exit_code == 2 and "--users" in bad.output
