"""Training tables (recsys.training.tables): partitioned parquet at a path or URI, read back by Ray Data."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads
import pytest

from recsys.training.tables import join, read_table, restore_shapes, write_table


def _columns(n: int = 100) -> dict[str, np.ndarray]:
    a = np.arange(n, dtype=np.int32)
    return {"a": a, "m": np.stack([a * 10, a * 10 + 1, a * 10 + 2], axis=1).astype(np.float32)}


def test_rows_are_written_shuffled_in_files_and_kept_whole(tmp_path):
    ref = write_table(str(tmp_path / "t"), _columns(), seed=3)
    assert ref.rows == 100 and ref.shapes == {"a": (), "m": (3,)}
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert len(files) == 8 and files[0] == "part-00000.parquet"
    table = pads.dataset(str(tmp_path / "t"), format="parquet").to_table()
    a = table["a"].to_numpy()
    m = np.stack(table["m"].to_numpy(zero_copy_only=False))
    assert sorted(a.tolist()) == list(range(100))  # every row once
    np.testing.assert_array_equal(m[:, 0], a * 10)  # a row's columns stay together
    assert not np.array_equal(a, np.arange(100))  # seeded random order: every file is a random sample
    again = pads.dataset(str(tmp_path / "t"), format="parquet").to_table()["a"].to_numpy()
    write_table(str(tmp_path / "t"), _columns(), seed=3)  # replaces the table, same order for the same seed
    np.testing.assert_array_equal(pads.dataset(str(tmp_path / "t"), format="parquet").to_table()["a"].to_numpy(),
                                  again)


def test_uris_and_bad_tables(tmp_path):
    uri = (tmp_path / "u").as_uri()
    assert uri.startswith("file://")
    assert write_table(join(uri, "run", "rows"), _columns(20), seed=1).rows == 20
    assert len(list((tmp_path / "u" / "run" / "rows").glob("part-*.parquet"))) == 8
    assert join("s3://bucket/x/", "run", "rows") == "s3://bucket/x/run/rows"
    with pytest.raises(ValueError, match="differ in length"):
        write_table(str(tmp_path / "bad"), {"a": np.arange(3), "b": np.arange(4)}, seed=1)
    with pytest.raises(ValueError, match="no rows"):
        write_table(str(tmp_path / "empty"), {"a": np.arange(0)}, seed=1)


def test_ray_data_reads_the_table_with_its_shapes(ray_cluster, tmp_path):
    ref = write_table((tmp_path / "r").as_uri(), _columns(), seed=5)
    ds = read_table(ref)
    assert ds.count() == 100
    batches = list(ds.iter_torch_batches(batch_size=64, device="cpu"))
    assert [tuple(b["m"].shape) for b in batches] == [(64, 3), (36, 3)]
    a = np.concatenate([b["a"].numpy() for b in batches])
    m = np.concatenate([b["m"].numpy() for b in batches])
    assert sorted(a.tolist()) == list(range(100))
    np.testing.assert_array_equal(m[:, 2], a * 10 + 2)


def test_tables_are_read_without_the_v2_footer_actor_pool(ray_cluster, tmp_path):
    """Each execution of a V2 parquet read lists files through a pool of 32 footer-reader actors: 5-8 s of every
    training epoch on 2 cores. The tables are read with plain read tasks, and the process's setting stays."""
    import ray.data

    before = ray.data.DataContext.get_current().use_datasource_v2
    ds = read_table(write_table((tmp_path / "v1").as_uri(), _columns(), seed=2)).materialize()
    operators = [line for line in ds.stats().splitlines() if line.startswith("Operator")]
    assert any("ReadParquet:" in line for line in operators), operators
    assert not any("ListFiles" in line for line in operators), operators
    assert ray.data.DataContext.get_current().use_datasource_v2 == before


def test_zero_width_columns_round_trip(ray_cluster, tmp_path):
    """A ranker without sparse features writes a (lists, n, 0) column; arrow lists need width >= 1 (the demo
    failed with ArrowInvalid before the placeholder)."""
    cols = {**_columns(10), "s": np.zeros((10, 4, 0), np.int64), "d": np.ones((10, 2, 3), np.float32)}
    ref = write_table(str(tmp_path / "z"), cols, seed=1)
    assert ref.shapes["s"] == (4, 0)
    batches = [restore_shapes(b, ref.shapes) for b in read_table(ref).iter_torch_batches(batch_size=6, device="cpu")]
    assert [tuple(b["s"].shape) for b in batches] == [(6, 4, 0), (4, 4, 0)]
    assert [tuple(b["d"].shape) for b in batches] == [(6, 2, 3), (4, 2, 3)]
    assert str(batches[0]["s"].dtype) == "torch.int64"
