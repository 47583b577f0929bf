"""The A/B analysis counts an outcome only within the attribution window after one of its unit's exposures.

Issue 23: the A/B metrics counted every outcome from a unit's first exposure on, so a click a week after the
unit's only exposure still counted for its arm (OPE already credited one exposure per click within a window).
Now ``analysis.attribution_window_s`` (default one day) bounds it, in `unit_table`, in `UnitEvents` (the
report's path) and so in `analyze_experiment`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recsys.experiments.analysis import analyze_experiment
from recsys.experiments.config import Experiment
from recsys.experiments.exposure_log import ExposureLog, read_log
from recsys.experiments.frozen_plan import PlanStore, plan_drift
from recsys.experiments.metrics import UnitEvents, attribution_mask, unit_table, variant_metrics

T0 = 1_700_000_000.0
DAY = 86_400.0


def _log(tmp_path):
    with ExposureLog(tmp_path) as log:
        log.log_exposure("u1", "exp", "a", "r1", T0, [1])
        log.log_outcome("u1", "click", 1, T0 + 60)  # a minute after the exposure: counts
        log.log_outcome("u1", "click", 1, T0 + 2 * DAY)  # two days after its only exposure so far: not counted
        log.log_exposure("u1", "exp", "a", "r2", T0 + 3 * DAY, [2])
        log.log_outcome("u1", "click", 1, T0 + 3 * DAY + 10)  # after the second exposure: counts
        log.log_exposure("u2", "exp", "b", "r3", T0, [3])
        log.log_outcome("u2", "click", 1, T0 + DAY)  # exactly at the window's end: counts
        log.log_outcome("u2", "purchase", 30.0, T0 + 1.5 * DAY)  # outside: no conversion, no reward
    return read_log(tmp_path)


def _experiment(**analysis) -> Experiment:
    return Experiment.model_validate({"name": "exp", "variants": [{"name": "a", "weight": 50},
                                                                  {"name": "b", "weight": 50}],
                                      "control": "a", "analysis": {"primary_metric": "ctr", **analysis}})


def test_a_click_outside_the_attribution_window_is_not_counted(tmp_path):
    frames = _log(tmp_path)
    table = unit_table(frames, "exp", ["purchase"], attribution_window_s=DAY)[0].set_index("unit_id")
    assert table.loc["u1", "clicks"] == 2  # the click two days after the first exposure is out
    assert table.loc["u2", ["clicks", "purchased", "reward"]].tolist() == [1, False, 0.0]
    unbounded = unit_table(frames, "exp", ["purchase"])[0].set_index("unit_id")
    assert unbounded.loc["u1", "clicks"] == 3 and unbounded.loc["u2", "purchased"]  # no window: the old rule

    # the report's path: the config's window (default one day), the same numbers as the unit table
    analysis = analyze_experiment(_experiment(), frames)
    assert analysis.metrics["a"].clicks == 2 and analysis.metrics["b"].conversion == 0.0
    events = UnitEvents(frames, "exp", ["purchase"], attribution_window_s=DAY)
    for cut in (T0 + 100, T0 + 2.5 * DAY, np.inf):
        fast = events.metrics_at(cut)
        slow = variant_metrics(unit_table(frames, "exp", ["purchase"], until=cut, attribution_window_s=DAY)[0])
        assert {v: m.clicks for v, m in fast.items()} == {v: m.clicks for v, m in slow.items()}
    wide = analyze_experiment(_experiment(attribution_window_s=7 * DAY), frames)
    assert wide.metrics["a"].clicks == 3 and wide.metrics["b"].conversion == 1.0
    unlimited = analyze_experiment(_experiment(attribution_window_s=None), frames)
    assert unlimited.metrics["a"].clicks == 3


def test_attribution_mask_uses_the_latest_exposure_of_the_same_unit():
    mask = attribution_mask(np.array(["u1", "u1", "u2", "u3"], dtype=object), np.array([50.0, 500.0, 50.0, 10.0]),
                            np.array(["u1", "u2", "u1"], dtype=object), np.array([0.0, 60.0, 450.0]), 100.0)
    # u1 at 50 (exposed at 0), u1 at 500 (latest exposure 450), u2 at 50 (exposed only later), u3 never
    assert mask.tolist() == [True, True, False, False]
    assert attribution_mask(np.array(["u1"], dtype=object), np.array([1e9]), np.array([], dtype=object),
                            np.array([]), None).tolist() == [True]


def test_a_plan_frozen_before_the_window_setting_existed_reports_no_drift(tmp_path):
    experiment = _experiment()
    store = PlanStore(tmp_path / "plans")
    plan = store.freeze(experiment, _log(tmp_path / "log"))
    old = replace(plan, analysis={k: v for k, v in plan.analysis.items() if k != "attribution_window_s"})
    assert plan_drift(old, experiment) == []
    assert old.analysis_settings().attribution_window_s == pytest.approx(DAY)
    assert plan_drift(old, _experiment(attribution_window_s=3600)) == ["attribution_window_s"]
