"""Exposure/outcome log: concurrent appends from several processes, reading back, the exposure join."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest

from recsys.experiments.exposure_log import ExposureLog, read_log
from recsys.experiments.metrics import unit_table, variant_metrics

WRITER = """
import sys
from recsys.experiments import ExposureLog
directory, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = ExposureLog(directory, fsync="interval", fsync_interval_s=0.05)
items = list(range(worker * 1000, worker * 1000 + 800))  # ~5 KB lines: bigger than PIPE_BUF
for i in range(n):
    log.log_exposure(f"u{worker}-{i}", "exp", "ab"[i % 2], f"r{worker}-{i}", 1_700_000_000 + i, items)
    log.log_outcome(f"u{worker}-{i}", "click", 1.0, 1_700_000_000 + i + 1, item_id=items[0])
log.close()
"""


def test_concurrent_appends_from_several_processes_never_corrupt_lines(tmp_path):
    workers, per_worker = 4, 1000
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(per_worker)]) for w in range(workers)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    files = sorted(tmp_path.glob("*.jsonl"))
    assert {f.name.split("-")[0] for f in files} == {"exposures", "outcomes"}
    lines = [line for f in files if f.name.startswith("exposures") for line in f.read_bytes().splitlines()]
    assert len(lines) == workers * per_worker
    records = [json.loads(line) for line in lines]  # every line is one intact JSON document
    for record in records:
        worker = int(record["unit_id"][1:].split("-")[0])
        assert record["items"] == list(range(worker * 1000, worker * 1000 + 800))
    frames = read_log(tmp_path)
    assert frames.bad_lines == 0
    assert len(frames.exposures) == workers * per_worker
    assert len(frames.outcomes) == workers * per_worker


def test_reader_skips_torn_lines_and_validates_events(tmp_path):
    with ExposureLog(tmp_path, fsync="always") as log:
        log.log_exposure("u1", "exp", "a", "r1", 1_700_000_000.0, [1, 2])
        with pytest.raises(ValueError, match="event_type"):
            log.log_outcome("u1", "like", 1.0, 1_700_000_001.0)
    with open(tmp_path / "exposures-2023-11-14.jsonl", "ab") as handle:
        handle.write(b'{"unit_id": "u2", "experi')  # a crash mid-write
    frames = read_log(tmp_path)
    assert frames.bad_lines == 1
    assert frames.exposures["unit_id"].tolist() == ["u1"]
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "nope")


def test_log_is_picklable_and_reopens(tmp_path):
    log = ExposureLog(tmp_path)
    log.log_exposure("u1", "exp", "a", "r1", 1_700_000_000.0, [])
    clone = pickle.loads(pickle.dumps(log))
    clone.log_exposure("u2", "exp", "b", "r2", 1_700_000_000.0, [])
    clone.close()
    log.close()
    assert len(read_log(tmp_path).exposures) == 2


def test_outcomes_count_only_after_first_exposure_in_that_experiment(tmp_path):
    t0 = 1_700_000_000.0
    with ExposureLog(tmp_path) as log:
        log.log_outcome("u1", "click", 1, t0 - 10)  # before any exposure: ignored
        log.log_exposure("u1", "exp", "a", "r1", t0, [1])
        log.log_exposure("u1", "exp", "a", "r2", t0 + 100, [2])
        log.log_outcome("u1", "click", 1, t0 + 1)
        log.log_outcome("u1", "purchase", 25.0, t0 + 2)
        log.log_exposure("u2", "exp", "b", "r3", t0 + 50, [3])
        log.log_outcome("u2", "click", 1, t0 + 40)  # before u2's first exposure: ignored
        log.log_outcome("u2", "rating", 4.0, t0 + 60)
        log.log_exposure("u3", "other", "a", "r4", t0, [4])  # another experiment
        log.log_outcome("u3", "click", 1, t0 + 1)
    frames = read_log(tmp_path)
    table, conflicting = unit_table(frames, "exp", reward_events=["purchase", "rating"])
    assert conflicting == 0
    rows = table.set_index("unit_id")
    assert rows.loc["u1", ["exposures", "clicks", "purchased", "reward"]].tolist() == [2, 1, True, 25.0]
    assert rows.loc["u2", ["exposures", "clicks", "purchased", "reward"]].tolist() == [1, 0, False, 4.0]
    metrics = variant_metrics(table)
    assert metrics["a"].ctr == 0.5 and metrics["a"].conversion == 1.0
    assert metrics["b"].ctr == 0.0 and metrics["b"].reward_mean == 4.0
    cut, _ = unit_table(frames, "exp", until=t0 + 10)
    assert cut["unit_id"].tolist() == ["u1"] and cut["exposures"].tolist() == [1]


def test_outcomes_with_an_event_id_count_once_across_retries_and_replicas(tmp_path):
    """A client retrying after a 503 sends the same event again, maybe to another replica: one click."""
    t0 = 1_700_000_000.0
    first, second = ExposureLog(tmp_path, fsync="never"), ExposureLog(tmp_path, fsync="never")
    first.log_exposure("u1", "exp", "treatment", "r1", t0, [1, 2])
    assert first.log_outcome("u1", "click", 1.0, t0 + 1, item_id=1, event_id="evt-1") is True
    assert first.log_outcome("u1", "click", 1.0, t0 + 2, item_id=1, event_id="evt-1") is False  # same writer: skipped
    assert second.log_outcome("u1", "click", 1.0, t0 + 3, item_id=1, event_id="evt-1") is True  # other replica
    first.log_outcome("u1", "click", 1.0, t0 + 4, item_id=2)  # no id: every copy counts
    first.log_outcome("u1", "click", 1.0, t0 + 4, item_id=2)
    first.close()
    second.close()
    frames = read_log(tmp_path)
    assert frames.duplicate_outcomes == 1
    assert sorted(frames.outcomes["event_id"].fillna("-")) == ["-", "-", "evt-1"]
    assert frames.outcomes.loc[frames.outcomes["event_id"] == "evt-1", "ts"].item() == t0 + 1  # the first copy
    table, _ = unit_table(frames, "exp", ["purchase"])
    assert variant_metrics(table)["treatment"].clicks == 3
    with pytest.raises(ValueError):
        ExposureLog(tmp_path).log_outcome("u1", "click", event_id="")
