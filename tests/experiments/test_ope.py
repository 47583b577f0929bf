"""Off-policy evaluation: unbiased within CIs where the truth is known, variance grows with divergence, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from recsys.experiments.cli import cli
from recsys.experiments.ope import doubly_robust, ips, simulate_ope, snips, write_policy_log


def test_on_policy_ips_is_the_plain_mean_and_bad_propensities_are_refused():
    r = np.array([0, 1, 0, 1, 1.0])
    mu = np.array([0.2, 0.5, 0.3, 0.1, 0.9])
    e = ips(r, mu, mu)
    assert e.value == pytest.approx(0.6) and e.lo < 0.6 < e.hi and e.effective_n == pytest.approx(5)
    assert snips(r, mu, mu).value == pytest.approx(0.6)
    assert doubly_robust(r, mu, mu, np.full(5, 0.5), np.full(5, 0.5)).value == pytest.approx(0.6)
    with pytest.raises(ValueError, match="propensities"):
        ips(r, mu, np.array([0.2, 0.0, 0.3, 0.1, 0.9]))


def test_simulation_estimators_are_unbiased_within_their_cis_and_variance_grows_with_divergence():
    """simulate_ope feeds every run through estimate_from_log, the estimators `recsys experiments ope` uses."""
    runs = 200
    rows = simulate_ope(runs=runs, decisions=1500, divergences=(0.0, 0.5, 0.9), seed=3)
    by = {(r.divergence, r.estimator): r for r in rows}
    for r in rows:
        # unbiased: the mean over runs is within 4 Monte Carlo standard errors of the exact truth
        assert abs(r.bias) <= 4 * r.empirical_sd / np.sqrt(runs) + 1e-4, r
        # the per-run 95% CI covers the truth about 95% of the time
        assert r.coverage >= 0.88, r
        # the CI width estimates the real spread (no overconfident intervals)
        assert r.mean_se == pytest.approx(r.empirical_sd, rel=0.3), r
    for name in ("ips", "snips", "dr"):
        sds = [by[(lam, name)].empirical_sd for lam in (0.0, 0.5, 0.9)]
        assert sds[0] < sds[1] < sds[2], (name, sds)
    ess = [by[(lam, "ips")].mean_effective_n for lam in (0.0, 0.5, 0.9)]
    assert ess[0] > ess[1] > ess[2]
    # SNIPS and DR buy back variance far from the logging policy
    assert by[(0.9, "snips")].empirical_sd < by[(0.9, "ips")].empirical_sd
    assert by[(0.9, "dr")].empirical_sd < by[(0.9, "ips")].empirical_sd


@pytest.fixture(scope="module")
def policy_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("ope_log")
    ctr, inclusion = write_policy_log(d, requests=4000, n_items=30, slate=5, seed=1)
    return d, ctr, inclusion


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_cli_estimates_cover_the_true_value_of_a_new_policy(policy_log, tmp_path):
    log_dir, ctr, inclusion = policy_log
    # target: favour the first half of the catalogue, 5 items per request in expectation
    pi = np.where(np.arange(len(ctr)) < 15, 0.25, 1 / 12)
    assert pi.sum() == pytest.approx(5.0)
    pd.DataFrame({"item_id": np.arange(len(ctr)), "probability": pi}).to_csv(tmp_path / "p.csv", index=False)
    truth = float((pi * ctr).sum())
    res = _run(["ope", "--log", str(log_dir), "--policy", str(tmp_path / "p.csv"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["requests"] == 4000 and out["target_mass_logged"] == pytest.approx(1.0)
    est = {e["estimator"]: e for e in out["estimates"]}
    for name in ("ips", "snips", "dr"):
        assert est[name]["lo"] <= truth <= est[name]["hi"], (name, truth, est[name])
    table = _run(["ope", "--log", str(log_dir), "--policy", str(tmp_path / "p.csv")])
    assert "dr" in table.output and "clicks/request" in table.output


def test_cli_logging_policy_as_target_reproduces_the_observed_clicks(policy_log, tmp_path):
    log_dir, ctr, inclusion = policy_log
    pd.DataFrame({"item_id": np.arange(len(ctr)), "probability": inclusion}).to_csv(tmp_path / "l.csv", index=False)
    out = json.loads(_run(["ope", "--log", str(log_dir), "--policy", str(tmp_path / "l.csv"), "--json"]).output)
    truth = float((inclusion * ctr).sum())
    est = {e["estimator"]: e for e in out["estimates"]}
    assert est["ips"]["lo"] <= truth <= est["ips"]["hi"]
    assert est["ips"]["max_weight"] == pytest.approx(5.0)  # w = 1 for each of the 5 shown items


def test_cli_bad_inputs_exit_with_a_message(policy_log, tmp_path):
    log_dir, *_ = policy_log
    (tmp_path / "bad.csv").write_text("item_id,prob\n1,0.5\n")
    res = _run(["ope", "--log", str(log_dir), "--policy", str(tmp_path / "bad.csv")])
    assert res.exit_code == 1 and "--policy" in res.output and "probability" in res.output
    (tmp_path / "neg.csv").write_text("item_id,probability\n1,-0.5\n")
    res = _run(["ope", "--log", str(log_dir), "--policy", str(tmp_path / "neg.csv")])
    assert res.exit_code == 1 and "[0, 1]" in res.output
    res = _run(["ope", "--log", str(log_dir), "--policy", str(tmp_path / "missing.csv")])
    assert res.exit_code == 1 and "does not exist" in res.output
    (tmp_path / "ok.csv").write_text("item_id,probability\n1,0.5\n")
    res = _run(["ope", "--log", str(log_dir), "--policy", str(tmp_path / "ok.csv"), "--experiment", "nope"])
    assert res.exit_code == 1 and "no exposures" in res.output
    res = _run(["ope", "--log", str(tmp_path / "nolog"), "--policy", str(tmp_path / "ok.csv")])
    assert res.exit_code == 1 and "does not exist" in res.output
