"""`retrieval.sparse_embeddings`: an optimizer step touches only the batch's rows, and the model it trains
(2 workers, DDP over gloo with sparse gradients) is as good as the default dense one."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from recsys.training.config import RetrievalConfig
from recsys.training.two_tower.model import TwoTowerModel
from recsys.training.two_tower.optim import TwoTowerOptimizer

from .conftest import scale_config
from .test_scale_out import RECALL_TOL


def _model(sparse: bool) -> TwoTowerModel:
    torch.manual_seed(0)
    genres = torch.eye(4)[torch.arange(50) % 4]
    tokens = torch.randint(1, 30, (50, 5))
    return TwoTowerModel(n_users=40, n_items=50, item_genres=genres, item_tokens=tokens, text_buckets=32,
                         dim=8, hidden=16, sparse_embeddings=sparse)


def _step(model: TwoTowerModel, opt: TwoTowerOptimizer, users: list[int], items: list[int]) -> None:
    u, i = torch.tensor(users), torch.tensor(items)
    loss = model(u, i[:, None].clone(), i)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("sparse", [False, True])
def test_a_step_moves_only_the_rows_in_its_batch_when_sparse(sparse):
    model = _model(sparse)
    opt = TwoTowerOptimizer(model, 0.01, 0.0)
    _step(model, opt, [0, 1, 2], [0, 1, 2])  # first batch: users 0-2, items 0-2
    users_before = model.user_tower.user_embedding.weight.detach().clone()
    items_before = model.item_tower.id_embedding.weight.detach().clone()
    _step(model, opt, [10, 11, 12], [10, 11, 12])  # second batch: none of the first batch's rows
    moved_user = (model.user_tower.user_embedding.weight != users_before).any(dim=1)
    moved_item = (model.item_tower.id_embedding.weight != items_before).any(dim=1)
    # dense Adam keeps moving the first batch's rows (their momentum), O(table) work per step;
    # the sparse path touches the batch's rows only
    assert bool(moved_user[:3].any()) is (not sparse) and bool(moved_item[:3].any()) is (not sparse)
    assert moved_user[10:13].all() and moved_item[10:13].all()
    assert not moved_user[20:].any() and not moved_item[20:].any()


def test_sparse_embeddings_refuse_weight_decay():
    with pytest.raises(ValidationError, match="weight_decay"):
        RetrievalConfig(sparse_embeddings=True, weight_decay=1e-4)


def test_sparse_two_workers_train_as_well_as_dense_one(two_tower_runs, small_dataset, small_split, tmp_path):
    from recsys.training.two_tower.job import train_two_tower

    split, cat = small_split
    runs = {"dense": two_tower_runs[1]}  # the default (dense) two-tower, 1 worker, same config otherwise
    runs["sparse"] = train_two_tower(scale_config(tmp_path / "sparse", 2, retrieval={"sparse_embeddings": True}),
                                     split.train, split.validation, cat, small_dataset.items)
    dense, sparse = (runs[k].best_metrics["val_recall@20"] for k in ("dense", "sparse"))
    assert [h["workers"] for h in runs["sparse"].history] == [2, 2]
    assert sparse > 0.1 and abs(sparse - dense) <= RECALL_TOL, (dense, sparse)
