"""CUPED (issue 23): the pre-period value of each metric as covariate, in fixed-horizon and sequential analyses."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.experiments.analysis import analyze_experiment
from recsys.experiments.cuped import cuped_estimates
from recsys.experiments.cuped_simulation import cuped_frames
from recsys.experiments.simulation import simulation_experiment


def test_cuped_matches_the_textbook_formula_on_a_small_example():
    rng = np.random.default_rng(0)
    x_c, x_t = rng.normal(5, 2, 200), rng.normal(5, 2, 200)
    y_c, y_t = 2 + 0.8 * x_c + rng.normal(0, 1, 200), 2.5 + 0.8 * x_t + rng.normal(0, 1, 200)

    def arm(y):
        return {"exposures": np.ones_like(y), "clicks": y, "purchased": y > 6, "reward": y}

    def pre(x):
        out = np.zeros((len(x), 4))
        out[:, 3] = x  # PRE_REWARD
        return out

    got = cuped_estimates({"c": arm(y_c), "t": arm(y_t)}, {"c": pre(x_c), "t": pre(x_t)})
    dx = np.r_[x_c - x_c.mean(), x_t - x_t.mean()]
    dy = np.r_[y_c - y_c.mean(), y_t - y_t.mean()]
    theta = (dx @ dy) / (dx @ dx)
    x_all = np.r_[x_c, x_t].mean()
    est_t, var_t, th = got["t"]["reward"]
    assert th == pytest.approx(theta) and theta == pytest.approx(0.8, abs=0.1)
    assert est_t == pytest.approx(y_t.mean() - theta * (x_t.mean() - x_all))
    assert var_t == pytest.approx(np.var(y_t - theta * x_t, ddof=1) / 200)
    assert var_t < 0.4 * np.var(y_t, ddof=1) / 200  # rho^2 ~ 0.7: the variance shrinks accordingly


@pytest.mark.parametrize("metric", ["reward", "ctr"])
def test_cuped_narrows_both_the_fixed_and_the_sequential_intervals_on_the_same_log(metric):
    plan = {"max_units_per_variant": 1500, "looks": 5, "look_every_units": 150, "reward_events": ["click"]}
    plain = simulation_experiment(metric, **plan)
    frames = cuped_frames(np.random.default_rng(3), plain, units_per_arm=1500, lift=0.0)
    a = analyze_experiment(plain, frames)
    b = analyze_experiment(simulation_experiment(metric, cuped=True, **plan), frames)
    (ec, vc), (et, vt) = (a.metrics[v].estimate(metric) for v in ("control", "treatment"))
    (ac, wc), (at, wt) = (b.metrics[v].estimate(metric, cuped=True) for v in ("control", "treatment"))
    limit = 0.75 if metric == "reward" else 0.95  # clicks per user persist more than clicks per exposure
    assert np.sqrt(wc + wt) < limit * np.sqrt(vc + vt)
    assert abs((at - ac) - (et - ec)) < 2 * np.sqrt(vc + vt)  # same estimand: A/A, both near 0
    for method in ("group_sequential", "msprt"):
        pa, pb = a.comparisons[0].paths[method], b.comparisons[0].paths[method]
        assert len(pa.ts) == len(pb.ts) > 0
        assert np.all(pb.upper - pb.lower < pa.upper - pa.lower)
    assert b.plan.analysis["cuped"] is True  # frozen with the plan
