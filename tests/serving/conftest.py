"""Serving test fixtures: a model store with contract-conformant artifacts built here (no recsys.training).

`write_models(store, version, seed)` writes `two_tower`, `ranker`, `popularity`, `item_knn` versions that
follow docs/contracts.md: clustered random item embeddings, a TorchScript user tower (mean of history
item vectors + a user vector), a TorchScript ranker (linear on dense + hashed item-id bias), and the
baseline npz files. Catalog metadata comes from the session's `small_dataset`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.ports import free_port

DIM = 16
HISTORY = 10


def _tower_module(user_emb: np.ndarray, item_emb: np.ndarray, default: np.ndarray):
    import torch
    from torch import nn

    class UserTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.user_emb = nn.Parameter(torch.from_numpy(user_emb))
            self.item_emb = nn.Parameter(torch.from_numpy(item_emb))
            self.default = nn.Parameter(torch.from_numpy(default))

        def forward(self, user_index: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
            mask = (history >= 0).float().unsqueeze(-1)
            h = (self.item_emb[history.clamp(min=0)] * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            u = self.user_emb[user_index.clamp(min=0)] * (user_index >= 0).float().unsqueeze(-1)
            return nn.functional.normalize(u + h + self.default, dim=-1)

    return torch.jit.script(UserTower())


def _ranker_module(n_dense: int, vocab: int, seed: int):
    import torch
    from torch import nn

    class Ranker(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(n_dense, 1)
            self.bias = nn.Embedding(vocab, 1)

        def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
            return self.lin(dense).squeeze(-1) + self.bias(sparse).sum(1).squeeze(-1)

    torch.manual_seed(seed)
    m = Ranker()
    with torch.no_grad():
        m.lin.weight.zero_()
        m.lin.weight[0, 0] = 5.0  # retrieval_score dominates: rankings stay sensible
        m.bias.weight.mul_(0.1)
    return torch.jit.script(m)


def write_models(store, dataset, version: str, seed: int = 0, promote: bool = True) -> None:
    """Write all four models as `version` (and promote them)."""
    rng = np.random.default_rng(seed)
    items = dataset.items
    item_ids = items["item_id"].to_numpy(np.int64)
    user_ids = dataset.users["user_id"].to_numpy(np.int64)
    genres = items["genres"].astype(str).str.split("|").str[0].to_numpy()
    centers = {g: rng.normal(size=DIM) for g in sorted(set(genres))}
    emb = np.stack([centers[g] + 0.6 * rng.normal(size=DIM) for g in genres]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    user_emb = (0.5 * rng.normal(size=(len(user_ids), DIM))).astype(np.float32)
    default = (0.3 * rng.normal(size=DIM)).astype(np.float32)

    with store.write_version("two_tower", version, kind="retrieval", params={"seed": seed}) as d:
        np.save(d / "item_ids.npy", item_ids)
        np.save(d / "user_ids.npy", user_ids)
        np.save(d / "item_embeddings.npy", emb)
        _tower_module(user_emb, emb, default).save(str(d / "user_tower.pt"))
        (d / "config.json").write_text(json.dumps({"embedding_dim": DIM, "history_length": HISTORY}))

    spec = {
        "dense": ["retrieval_score", "item_popularity_7d"],
        "sparse": [{"name": "item_id", "vocab_size": 1024, "hash": True}],
        "normalization": {"retrieval_score": {"mean": 0.0, "std": 1.0}},
        "retrieval_score": True,
    }
    with store.write_version("ranker", version, kind="ranking") as d:
        _ranker_module(len(spec["dense"]), 1024, seed).save(str(d / "ranker.pt"))
        (d / "feature_spec.json").write_text(json.dumps(spec))

    counts = dataset.events.groupby("item_id").size()
    with store.write_version("popularity", version, kind="baseline") as d:
        np.savez(d / "model.npz", item_ids=counts.index.to_numpy(np.int64), scores=counts.to_numpy(np.float32))

    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    nb = np.argsort(-sims, axis=1)[:, :10]
    with store.write_version("item_knn", version, kind="baseline") as d:
        np.savez(d / "model.npz", item_ids=item_ids, neighbors=nb.astype(np.int64),
                 weights=np.take_along_axis(sims, nb, 1).astype(np.float32))
    if promote:
        for name in ("two_tower", "ranker", "popularity", "item_knn"):
            store.promote(name, version)


def build_store(dataset, root: Path):
    """A model store under ``root`` with version v1 of every model promoted, plus the catalog parquet."""
    from recsys.platform.model_store import ModelStore

    store = ModelStore(root / "models")
    write_models(store, dataset, "v1", seed=1)
    dataset.items.to_parquet(root / "items.parquet", index=False)
    return store, root / "items.parquet"


def base_args(store, catalog: Path, redis_url: str, exposures: Path) -> dict:
    """build_app args for a test store: 2 shards, exploration off, short feature timeout.

    Write endpoints open (``security.insecure``: these tests are not about auth) and a private feature
    project, so events posted by one app never reach another app's online features.
    """
    import uuid

    return {
        "model_store_uri": store.root,
        "num_shards": 2,
        "redis_url": redis_url,
        "catalog_path": str(catalog),
        "exposure_log_dir": str(exposures),
        "exploration_rate": 0.0,
        "exploration_seed": 3,
        "feature_timeout_s": 0.2,
        "security": {"insecure": True},
        "feature_project": f"srv{uuid.uuid4().hex[:8]}",
    }


@contextlib.contextmanager
def background_recommendations(url: str, body: Callable[[int], dict], record: Callable[[object], None],
                               threads: int = 2) -> Iterator[None]:
    """POST /v1/recommendations (``body(i)`` for the i-th request of a thread) from ``threads`` threads for
    the duration of the block; ``record`` gets each response, or the ``httpx.HTTPError`` instead of one.

    Daemon threads, stopped and joined on exit even when the block fails: a live non-daemon thread keeps
    pytest from exiting after its summary (a failed hot-swap assertion once hung the whole run).
    """
    import httpx

    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                try:
                    record(c.post("/v1/recommendations", json=body(i)))
                except httpx.HTTPError as e:
                    record(e)
                i += 1

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in workers:
            t.join(timeout=60)


def start_serve_proxy() -> str:
    """Serve's HTTP proxy on 127.0.0.1 (a free port if this session starts Serve; else the running one)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    return f"http://127.0.0.1:{_get_global_client().http_config.port}"


@pytest.fixture(scope="module")
def serving_store(small_dataset, tmp_path_factory):
    return build_store(small_dataset, tmp_path_factory.mktemp("serving_store"))


@pytest.fixture(scope="module")
def write_model_version(small_dataset):
    def _write(store, version: str, seed: int, promote: bool = True) -> None:
        write_models(store, small_dataset, version, seed=seed, promote=promote)

    return _write


@pytest.fixture(scope="module")
def serving_args(serving_store, redis_url, tmp_path_factory) -> dict:
    store, catalog = serving_store
    return base_args(store, catalog, redis_url, tmp_path_factory.mktemp("exposures"))


def closed_port_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/15"


@pytest.fixture
def closed_redis_url() -> str:
    return closed_port_url()


def _path(p) -> Path:
    return Path(p)


@pytest.fixture(scope="module")
def serve_base_url(ray_cluster) -> str:
    return start_serve_proxy()


def wait_ready(url: str, timeout: float = 120.0) -> None:
    import time

    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s")


@pytest.fixture(scope="module")
def wait_until_ready():
    return wait_ready


@pytest.fixture(scope="module")
def closed_port_redis_url() -> str:
    return closed_port_url()
