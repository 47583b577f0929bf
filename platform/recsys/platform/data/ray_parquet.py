"""``ray.data.read_parquet`` through Ray Data's V1 parquet datasource: what every Ray Data read here uses.

Why not this Ray's (2.60) default, the V2 datasource: V2 plans a ``ListFiles`` task that starts a pool of
32 footer-reader *actors* (``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS``) on every execution of the dataset (so on
every epoch of a training job) and kills them afterwards. Our parquet sets are a handful to a few thousand
files that our own jobs wrote; a pool of 32 processes to read their footers buys nothing and, on a 2-core
node, costs 5-8 s per execution: a two-tower epoch of 40 steps waited 5-8 s for its first batch, 0.5 s with
V1 (the ``[two_tower] epoch`` log line prints each epoch's time). V1 reads the same files with plain read
tasks and returns the same rows. The switch is scoped to the call; the process's ``DataContext`` is left
as it was for any other reader.
"""

from __future__ import annotations

from typing import Any


def read_parquet(paths: Any, **kwargs: Any):
    """``ray.data.read_parquet(paths, **kwargs)`` planned with the V1 datasource (a lazy ``Dataset``)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(paths, **kwargs)
    finally:
        ctx.use_datasource_v2 = v2
