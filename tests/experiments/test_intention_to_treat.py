"""Intention-to-treat and the SRM gate (issue 23): the biases of the old analysis, reproduced on a log.

* A shard outage made serving log treatment exposures as ``variant="fallback"`` (with the assigned
  variant) while control kept its degraded answers under its own name; a unit's arm was its first
  exposure's variant, so the outage's treatment units left the treatment arm and the survivors won.
* One fallback unit sent the SRM chi-square to infinity, and the DECISION line was printed anyway.
"""

from __future__ import annotations

import re

import numpy as np
import yaml
from click.testing import CliRunner

from recsys.experiments.analysis import analyze_experiment, experiment_report
from recsys.experiments.cli import cli
from recsys.experiments.config import parse_config
from recsys.experiments.exposure_log import ExposureLog, read_log

START = 1_735_689_600.0  # 2025-01-01T00:00:00Z
CONFIG = {
    "experiments": [
        {
            "name": "ranker",
            "start": "2025-01-01T00:00:00Z",
            "variants": [
                {"name": "control", "weight": 50},
                {"name": "treatment", "weight": 50, "ranking_version": "v2"},
            ],
            "analysis": {"primary_metric": "ctr", "tau": 0.02, "max_units_per_variant": 1500, "looks": 5},
        }
    ]
}


def _write_log(directory, *, units=1500, outage=0.2, treatment_ctr=0.10, lost_treatment=0.0, seed=0) -> dict:
    """A/A-like log: ``outage`` of the units in each arm hit a shard outage (CTR 0.03 instead of 0.10).

    Serving's old labelling: the treatment's outage exposures say ``fallback`` (+ assigned variant), the
    control's keep ``control``. ``lost_treatment``: share of treatment units never logged (a real SRM).
    """
    rng = np.random.default_rng(seed)
    assigned = {"control": 0, "treatment": 0}
    with ExposureLog(directory, fsync="never") as log:
        for u in range(2 * units):
            arm = "control" if u % 2 == 0 else "treatment"
            if arm == "treatment" and rng.random() < lost_treatment:
                continue
            assigned[arm] += 1
            hit = rng.random() < outage
            ctr = 0.03 if hit else (treatment_ctr if arm == "treatment" else 0.10)
            for r in range(3):
                ts = START + 60 + u * 100.0 + r * 10.0
                if hit and arm == "treatment":
                    log.log_exposure(f"u{u}", "ranker", "fallback", f"r{u}-{r}", ts, [1, 2], layer="default",
                                     assigned_variant="treatment", degraded=["retrieval_shard_unavailable"],
                                     fallback_reason="ranking_version v2 not served (retrieval_shard_unavailable)")
                else:
                    log.log_exposure(f"u{u}", "ranker", arm, f"r{u}-{r}", ts, [1, 2], layer="default",
                                     degraded=["retrieval_shard_unavailable"] if hit else None)
                if rng.random() < ctr:
                    log.log_outcome(f"u{u}", "click", 1.0, ts + 1.0, 1, event_id=f"c{u}-{r}")
    return assigned


def test_fallback_exposures_stay_in_the_arm_they_were_assigned_to(tmp_path):
    assigned = _write_log(tmp_path)
    experiment = parse_config(CONFIG).experiments[0]
    analysis = analyze_experiment(experiment, read_log(tmp_path))
    # every assigned unit is analysed in its arm; nothing is analysed as "fallback"
    assert set(analysis.metrics) == {"control", "treatment"}
    assert {v: m.units for v, m in analysis.metrics.items()} == assigned
    # A/A with the same outage in both arms: dropping the treatment's outage units (the old first-variant
    # rule) compares treatment's survivors (CTR 0.10) with all of control (0.086)
    c, t = analysis.metrics["control"], analysis.metrics["treatment"]
    assert abs(t.ctr - c.ctr) < 3 * np.sqrt(c.ctr_var + t.ctr_var)
    # the outage shows up as a guardrail metric, per arm, and the same in both
    rates = analysis.fallback.rates
    assert 0.15 < rates["control"] < 0.25 and 0.15 < rates["treatment"] < 0.25
    assert not analysis.fallback.flagged


def test_one_fallback_unit_does_not_send_srm_to_infinity(tmp_path):
    _write_log(tmp_path, units=400, outage=0.003, seed=3)
    frames = read_log(tmp_path)
    assert (frames.exposures["variant"] == "fallback").any()
    analysis = analyze_experiment(parse_config(CONFIG).experiments[0], frames)
    assert np.isfinite(analysis.srm.chi2) and not analysis.srm.mismatch
    assert "fallback" not in analysis.srm.observed


def test_a_fallback_rate_that_differs_between_arms_is_flagged(tmp_path):
    rng = np.random.default_rng(1)
    with ExposureLog(tmp_path, fsync="never") as log:
        for u in range(2000):
            arm = "control" if u % 2 == 0 else "treatment"
            degraded = arm == "treatment" and rng.random() < 0.2  # treatment's version is broken for 20%
            log.log_exposure(f"u{u}", "ranker", "fallback" if degraded else arm, f"r{u}", START + 60 + u, [1],
                             assigned_variant="treatment" if degraded else None,
                             fallback_reason="ranking_version v2 not served (ranker_unavailable)" if degraded else None)
    analysis = analyze_experiment(parse_config(CONFIG).experiments[0], read_log(tmp_path))
    assert analysis.fallback.rates["control"] == 0.0
    assert 0.15 < analysis.fallback.rates["treatment"] < 0.25
    assert analysis.fallback.flagged


def _report(tmp_path, config, *extra):
    config_path = tmp_path / "experiments.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["report", str(config_path), "--log", str(tmp_path / "log"),
                                      "--out", str(tmp_path / "out"), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_srm_mismatch_withholds_the_decision_and_says_why(tmp_path):
    # 30% of treatment units never logged, and a treatment that really is better: the old report
    # printed "DECISION ranker: stop: treatment wins" next to an SRM MISMATCH line
    _write_log(tmp_path / "log", outage=0.0, treatment_ctr=0.2, lost_treatment=0.3)
    out = _report(tmp_path, CONFIG)
    decision = re.search(r"^DECISION ranker: (.*)$", out, re.M).group(1)
    assert "stop" not in decision and "wins" not in decision
    assert "withheld" in decision and "sample ratio mismatch" in decision
    assert "stop: treatment wins" not in out  # not in the per-method table either
    # the SRM verdict, the per-arm fallback rates and the plan id come before any decision
    srm_at, fallback_at, plan_at = out.index("SRM:"), out.index("fallback/degraded"), out.index("plan ")
    assert max(srm_at, fallback_at, plan_at) < re.search(r"^treatment +method", out, re.M).start()


def test_the_srm_threshold_is_configurable_and_a_clean_split_decides(tmp_path):
    _write_log(tmp_path / "log", outage=0.0, treatment_ctr=0.2, lost_treatment=0.3)
    loose = yaml.safe_load(yaml.safe_dump(CONFIG))
    loose["experiments"][0]["analysis"]["srm_p_threshold"] = 1e-300
    out = _report(tmp_path, loose)
    assert re.search(r"^DECISION ranker: stop: treatment wins$", out, re.M)


def test_the_report_is_a_data_structure_the_console_can_read(tmp_path):
    _write_log(tmp_path, outage=0.1, treatment_ctr=0.2)
    data = experiment_report(parse_config(CONFIG).experiments[0], read_log(tmp_path)).to_dict()
    assert data["srm"]["mismatch"] is False and data["decision_withheld"] is None
    assert set(data["fallback"]["rates"]) == {"control", "treatment"}
    assert data["plan"]["plan_id"].startswith("ranker@v")
    looks = data["comparisons"][0]["looks"]["group_sequential"]
    assert looks and {"ts", "estimate", "lower", "upper"} <= set(looks[0])
    assert data["decision"].startswith("stop: treatment wins")


def test_fallback_reasons_are_counted_per_arm_in_the_report_object_and_text(tmp_path):
    """Issue 23 item 6: the guardrail said how often an arm was served worse, not why; now it counts reasons."""
    from recsys.experiments.report import fallback_line

    with ExposureLog(tmp_path, fsync="never") as log:
        for u in range(40):
            arm, ts = ("control" if u % 2 == 0 else "treatment"), START + 60 + u
            if arm == "treatment" and u % 4 == 1:  # 10 fallbacks: the version is missing, and a shard is down
                log.log_exposure(f"u{u}", "ranker", "fallback", f"r{u}", ts, [1], assigned_variant="treatment",
                                 fallback_reason="experiment_version_unavailable",
                                 degraded=["experiment_version_unavailable", "retrieval_shard_unavailable"])
            elif arm == "control" and u % 10 == 0:  # 4 degraded control answers
                log.log_exposure(f"u{u}", "ranker", arm, f"r{u}", ts, [1], degraded=["ranker_unavailable"])
            else:
                log.log_exposure(f"u{u}", "ranker", arm, f"r{u}", ts, [1])
            log.log_exposure(f"u{u}", "ranker", arm, f"r{u}b", ts + 1, [1])  # a second, clean exposure
        log.log_exposure("u99", "ranker", "fallback", "r99", START + 200, [1], assigned_variant="control",
                         fallback_reason="")  # a fallback record that names no reason
    analysis = analyze_experiment(parse_config(CONFIG).experiments[0], read_log(tmp_path))
    reasons = analysis.fallback.reasons
    assert reasons == {  # each reason once per exposure (the fallback reason is also a degraded reason here)
        "control": {"ranker_unavailable": 4, "fallback (no reason logged)": 1},
        "treatment": {"experiment_version_unavailable": 10, "retrieval_shard_unavailable": 10},
    }
    assert analysis.fallback.degraded_exposures == {"control": 5, "treatment": 10}
    assert analysis.to_dict()["fallback"]["reasons"] == reasons  # what the console and --json read
    line = fallback_line(analysis)
    assert "reasons: control: ranker_unavailable 4, fallback (no reason logged) 1; " in line
    assert "treatment: experiment_version_unavailable 10, retrieval_shard_unavailable 10" in line
