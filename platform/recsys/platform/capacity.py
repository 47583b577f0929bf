"""A capacity model: cores, nodes, memory, Redis size and wall time for a daily retrain and for serving.

Every constant is a figure measured on the 2-core CI box (docs/operations.md "Capacity model" gives
the command and date of each) scaled linearly, which the cost curves of ``benchmarks/scale.py`` justify
only where a stage's measured exponent is ~1 (the README table says which are). It is an estimate
to size a cluster before a load test, not a substitute for one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Measured:
    """Per-unit costs measured here (core-seconds per unit unless noted)."""

    build_core_s_per_event: float = 4.3 / 1.09e6  # `recsys features build`, 1x (1.09M events) in 4.3 s, 1 process
    materialize_rows_per_core_s: float = 20_000.0  # inline writer, full load, 1x (benchmarks/materialize.py)
    seen_core_s_per_user: float = 0.3 / 6000  # seen sets of 6k users in ~0.3 s
    # benchmarks/scale.py at 16x (17.4M events, 96k users, 64k items), the largest scale measured, on the
    # 2-core box, CLI start-up included (README "Offline pipeline cost curves"; per event they are the
    # highest of the three scales: two-tower and baselines grow faster than linearly, see there):
    two_tower_core_s_per_event: float = 923.2 * 2 / 17.44e6  # `train retrieval --epochs 1`: 923.2 s
    baselines_core_s_per_event: float = 612.1 * 2 / 17.44e6  # popularity, item-kNN, ALS, BPR: 612.1 s
    eval_core_s_per_user: float = 152.7 * 2 / 6000  # `recsys evaluate --max-users 6000`, 64k items: 152.7 s
    user_hash_bytes: int = 1_400  # Redis MEMORY USAGE of one user's feature hash (two views)
    item_hash_bytes: int = 1_430  # one item's feature hash (two views)
    seen_bytes_per_item: float = 6.3  # seen set: "id," text per remembered item
    serve_rps_per_core: float = 15.2  # end-to-end HTTP, 1M items: 30.4 req/s on 2 cores (benchmarks/http_load.py)
    pipeline_rps_per_core: float = 345.0  # pipeline compute alone, 2.9 ms CPU/request (serve_overhead --no-serve)
    redis_ops_per_core_s: float = 100_000.0  # pipelined HMGET/GET per Redis core (a conservative round figure)
    redis_reads_per_request: int = 4  # user hash, seen batch + live, overlay (items come from the snapshot)
    item_snapshot_bytes_per_item: int = 150  # ingress replica's item-feature snapshot: ~150 MiB per 1M items


@dataclass(frozen=True)
class Assumptions:
    cores_per_node: int = 32
    memory_per_node_gib: int = 128
    retrain_window_h: float = 4.0  # the daily retrain must finish within this
    seen_items_per_user: int = 100  # average remembered items per user (cap: FeatureStoreConfig.seen_items)
    epochs: int = 1
    redis_headroom: float = 1.5  # fragmentation, replication buffers, growth
    ingress_replicas_per_node: int = 4
    measured: Measured = field(default_factory=Measured)


@dataclass
class Capacity:
    users: int
    items: int
    events: int
    rps: float
    retrain_core_hours: dict[str, float]
    retrain_cores: int
    retrain_nodes: int
    redis_gib: float
    redis_shards: int
    serve_cores: int
    serve_cores_pipeline_only: int
    serve_nodes: int
    assumptions: Assumptions

    def table(self) -> str:
        a = self.assumptions
        lines = [f"capacity for {self.users:,} users x {self.items:,} items, {self.events:,} events, "
                 f"{self.rps:,.0f} requests/s",
                 f"daily retrain (within {a.retrain_window_h:g} h, {a.epochs} epoch(s)):"]
        for stage, ch in self.retrain_core_hours.items():
            lines.append(f"  {stage:<22} {ch:>12,.1f} core-hours")
        total = sum(self.retrain_core_hours.values())
        lines += [f"  {'total':<22} {total:>12,.1f} core-hours -> {self.retrain_cores:,} cores = "
                  f"{self.retrain_nodes:,} nodes of {a.cores_per_node} cores for {a.retrain_window_h:g} h",
                  f"Redis: {self.redis_gib:,.0f} GiB (x{a.redis_headroom} headroom) in {self.redis_shards:,} shards "
                  f"(memory and {a.measured.redis_reads_per_request} reads/request at "
                  f"{a.measured.redis_ops_per_core_s:,.0f} ops/s per shard)",
                  f"serving: {self.serve_cores:,} cores = {self.serve_nodes:,} nodes at the measured end-to-end "
                  f"{a.measured.serve_rps_per_core:g} req/s/core ({self.serve_cores_pipeline_only:,} cores if only "
                  f"the pipeline's own CPU counted: the gap is Ray Serve/HTTP overhead)"]
        return "\n".join(lines)


def estimate(users: int, items: int, events: int, rps: float, assumptions: Assumptions | None = None) -> Capacity:
    """Linear scaling of the measured per-unit costs to the given sizes (see the module docstring)."""
    if min(users, items, events) <= 0 or rps < 0:
        raise ValueError("users, items and events must be positive and rps non-negative")
    a = assumptions or Assumptions()
    m = a.measured
    core_s = {
        "features build": events * m.build_core_s_per_event,
        "materialize": (2 * users + 2 * items) / m.materialize_rows_per_core_s + users * m.seen_core_s_per_user,
        "train two-tower": events * m.two_tower_core_s_per_event * a.epochs,
        "train baselines": events * m.baselines_core_s_per_event,
        "evaluate": users * m.eval_core_s_per_user,
    }
    core_h = {k: v / 3600 for k, v in core_s.items()}
    cores = math.ceil(sum(core_h.values()) / a.retrain_window_h)
    redis_bytes = (users * (m.user_hash_bytes + a.seen_items_per_user * m.seen_bytes_per_item)
                   + items * m.item_hash_bytes) * a.redis_headroom
    redis_gib = redis_bytes / 2**30
    shards_for_memory = math.ceil(redis_gib / (a.memory_per_node_gib * 0.5))  # half a node's memory per shard
    shards_for_ops = math.ceil(rps * m.redis_reads_per_request / m.redis_ops_per_core_s)
    serve_cores = math.ceil(rps / m.serve_rps_per_core)
    return Capacity(
        users=users, items=items, events=events, rps=rps, retrain_core_hours=core_h, retrain_cores=cores,
        retrain_nodes=math.ceil(cores / a.cores_per_node), redis_gib=redis_gib,
        redis_shards=max(shards_for_memory, shards_for_ops, 1), serve_cores=serve_cores,
        serve_cores_pipeline_only=math.ceil(rps / m.pipeline_rps_per_core),
        serve_nodes=math.ceil(serve_cores / a.cores_per_node), assumptions=a,
    )
