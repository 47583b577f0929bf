"""Off-policy logs you can estimate from (issue 23): unrounded propensities, one credit per click, and a
per-decision support check that names the decision. (The estimators themselves: test_ope.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.experiments.exposure_log import ExposureLog, read_log
from recsys.experiments.ope import decisions_from_log, ips

T0 = 1_735_689_600.0


def test_a_small_propensity_is_logged_as_it_is_not_rounded_to_zero(tmp_path):
    with ExposureLog(tmp_path, fsync="never") as log:
        log.log_exposure("u", "e", "a", "r1", T0, [1, 2], propensities=[1.0, 3.2e-9])
    assert read_log(tmp_path).exposures["propensities"][0] == [1.0, 3.2e-9]  # was [1.0, 0.0]


def test_one_click_credits_one_exposure_the_latest_before_it(tmp_path):
    with ExposureLog(tmp_path, fsync="never") as log:
        log.log_exposure("u", "e", "a", "r1", T0, [7, 8], propensities=[0.5, 0.5])
        log.log_exposure("u", "e", "a", "r2", T0 + 100, [7, 9], propensities=[0.5, 0.5])
        log.log_outcome("u", "click", 1.0, T0 + 150, 7, event_id="c1")
    frames = read_log(tmp_path)
    target = pd.DataFrame({"item_id": ["7", "8", "9"], "probability": [0.5, 0.5, 0.5]})
    d = decisions_from_log(frames.exposures, frames.outcomes, target, window_s=3600)
    # w = 1 everywhere, so the IPS terms add up the credited clicks: one click, one credit (was 2)
    assert d.ips_terms.sum() == pytest.approx(1.0)
    assert d.n_requests == 2


def test_a_decision_without_support_is_named_in_the_error():
    rewards = np.ones(10)
    mu = np.full(10, 0.5)
    mu[6] = 0.0
    with pytest.raises(ValueError, match=r"decision 6\b.*logging propensity 0.*no support"):
        ips(rewards, np.full(10, 0.5), mu)


def test_a_slate_log_with_a_zero_propensity_names_the_request(tmp_path):
    with ExposureLog(tmp_path, fsync="never") as log:
        log.log_exposure("u", "e", "a", "r1", T0, [1, 2], propensities=[0.5, 0.5])
        log.log_exposure("u", "e", "a", "r-bad", T0 + 5, [1, 3], propensities=[0.5, 0.0])
    frames = read_log(tmp_path)
    target = pd.DataFrame({"item_id": ["1", "2", "3"], "probability": [0.3, 0.3, 0.3]})
    with pytest.raises(ValueError, match=r"request r-bad.*item 3.*propensity 0"):
        decisions_from_log(frames.exposures, frames.outcomes, target)
