"""Exposure/outcome logs through one durable path (a Redis stream) into daily partitioned parquet (issue 22).

Real Redis (the test db, a private stream name), real parquet files; ``memory://`` is fsspec's own
in-memory filesystem, standing in for an object store (``s3://`` goes through the same fsspec calls).
"""

from __future__ import annotations

import uuid

import pytest
import redis

DAY = 86_400.0
T0 = 1_780_000_000.0  # 2026-05-28 UTC


@pytest.fixture
def archive_cfg(tmp_path):
    from recsys.platform.log_archiver import LogArchiveConfig

    def make(uri: str, **kw) -> LogArchiveConfig:
        return LogArchiveConfig(uri=uri, stream=f"test:logs:{uuid.uuid4().hex[:8]}", **kw)

    return make


def _log_three_days(redis_url, cfg):
    from recsys.experiments.exposure_log import ExposureLog
    from recsys.platform.log_archiver import LogStream

    log = ExposureLog(None, sink=LogStream(redis_url, cfg).publish)
    for day in range(3):
        for i in range(5):
            ts = T0 + day * DAY + i
            log.log_exposure(f"u{i}", "exp", "a" if i % 2 else "b", f"r{day}-{i}", ts, [1, 2, 3],
                             propensities=[1.0, 0.5, 1.0])
            log.log_outcome(f"u{i}", "click", 1.0, ts + 1, item_id=2, event_id=f"e{day}-{i}")
    other_replica = ExposureLog(None, sink=LogStream(redis_url, cfg).publish)
    other_replica.log_outcome("u0", "click", 1.0, T0 + 2, item_id=2, event_id="e0-0")  # a retry: counted once


@pytest.mark.parametrize("scheme", ["dir", "file", "memory"])
def test_stream_to_daily_parquet_and_back_through_read_log(redis_url, archive_cfg, tmp_path, scheme):
    from recsys.experiments.exposure_log import read_log
    from recsys.platform import log_dataset
    from recsys.platform.log_archiver import LogArchiver

    uri = {"dir": str(tmp_path / "logs"), "file": f"file://{tmp_path}/logs",
           "memory": f"memory://recsys-test-{uuid.uuid4().hex[:8]}"}[scheme]
    cfg = archive_cfg(uri)
    _log_three_days(redis_url, cfg)
    archiver = LogArchiver(redis_url, cfg)
    assert archiver.drain() == 31
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.xlen(cfg.stream) == 0, "archived entries are acked and deleted: the stream stays small"
        assert log_dataset.days(uri, "exposures") == ["2026-05-28", "2026-05-29", "2026-05-30"]
        frames = read_log(uri)
        assert len(frames.exposures) == 15 and len(frames.outcomes) == 15 and frames.duplicate_outcomes == 1
        assert frames.exposures["items"].iloc[0] == [1, 2, 3] and frames.exposures["propensities"].iloc[0] == [1, .5, 1]
        one_day = read_log(uri, start="2026-05-29", end="2026-05-29")
        assert len(one_day.exposures) == 5 and set(one_day.exposures["request_id"]) == {f"r1-{i}" for i in range(5)}
    finally:
        r.delete(cfg.stream)


def test_retention_drops_whole_old_days(redis_url, archive_cfg, tmp_path):
    from recsys.platform import log_dataset

    uri = str(tmp_path / "logs")
    for day in range(5):
        log_dataset.write_records(uri, "outcomes", [{"ts": T0 + day * DAY, "unit_id": "u", "event_type": "view"}])
    removed = log_dataset.prune(uri, "outcomes", retention_days=2, now=T0 + 4 * DAY)
    assert removed == ["2026-05-28", "2026-05-29"]
    assert log_dataset.days(uri, "outcomes") == ["2026-05-30", "2026-05-31", "2026-06-01"]
    assert log_dataset.prune(uri, "outcomes", retention_days=0) == [], "0 keeps everything"


def test_reader_streams_row_groups_not_whole_files(tmp_path, monkeypatch):
    from recsys.platform import log_dataset

    monkeypatch.setattr(log_dataset, "ROW_GROUP_ROWS", 10)
    uri = str(tmp_path / "logs")
    log_dataset.write_records(uri, "exposures", [{"ts": T0 + i, "unit_id": str(i)} for i in range(95)])
    sizes = [b.num_rows for b in log_dataset.iter_batches(uri, "exposures")]
    assert sizes == [10] * 9 + [5], "one row group at a time"
    assert [r["unit_id"] for r in log_dataset.iter_records(uri, "exposures")][:3] == ["0", "1", "2"]
    assert not list((tmp_path / "logs").rglob(".*.tmp")), "files appear by rename, no temp left behind"


def test_a_poison_entry_never_blocks_the_archiver(redis_url, archive_cfg, tmp_path):
    from recsys.platform import log_dataset
    from recsys.platform.log_archiver import LogArchiver, LogStream

    cfg = archive_cfg(str(tmp_path / "logs"))
    r = redis.Redis.from_url(redis_url)
    try:
        stream = LogStream(redis_url, cfg)
        stream.publish("outcomes", {"ts": T0, "unit_id": "u1", "event_type": "click"})
        r.xadd(cfg.stream, {"kind": "outcomes", "rec": "{not json"})
        r.xadd(cfg.stream, {"kind": "outcomes", "rec": '{"unit_id": "no ts"}'})
        r.xadd(cfg.stream, {"rec": "{}"})  # no kind
        stream.publish("outcomes", {"ts": T0 + 1, "unit_id": "u2", "event_type": "click", "value": [1, "x"]})
        stream.publish("outcomes", {"ts": T0 + 2, "unit_id": "u3", "event_type": "click"})
        archiver = LogArchiver(redis_url, cfg)
        archiver.drain()
        assert archiver.bad == 3 and r.xlen(cfg.stream) == 0
        got = sorted(rec["unit_id"] for rec in log_dataset.iter_records(cfg.uri, "outcomes"))
        assert got == ["u1", "u2", "u3"]
    finally:
        r.delete(cfg.stream)


def test_experiment_cli_reads_the_parquet_dataset(redis_url, archive_cfg, tmp_path):
    from click.testing import CliRunner

    from recsys.experiments.cli import cli
    from recsys.platform.log_archiver import LogArchiver

    cfg = archive_cfg(f"file://{tmp_path}/logs")
    _log_three_days(redis_url, cfg)
    LogArchiver(redis_url, cfg).drain()
    redis.Redis.from_url(redis_url).delete(cfg.stream)
    exp = tmp_path / "exp.yaml"
    exp.write_text("version: 1\nexperiments:\n  - name: exp\n    variants:\n"
                   "      - {name: a, weight: 50}\n      - {name: b, weight: 50}\n")
    res = CliRunner().invoke(cli, ["status", str(exp), "--log", cfg.uri])
    assert res.exit_code in (0, 1), res.output  # 1 = sample-ratio mismatch flagged, still a report
    assert "exp:" in res.output and "a" in res.output, res.output
