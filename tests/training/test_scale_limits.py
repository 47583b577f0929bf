"""Models that do not scale say so: EASE refuses big catalogs naming the memory; batched evaluation is exact."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from recsys.training.baselines.ease import EaseRecommender, EaseTooLargeError, ease_memory_bytes
from recsys.training.evaluation import Evaluator


def test_ease_refuses_above_max_items_naming_the_memory():
    x = sp.random(50, 40, density=0.3, format="csr", random_state=0)
    with pytest.raises(EaseTooLargeError, match=r"refuses 40 items \(ease_max_items=30\).*about 18\.8 KiB"):
        EaseRecommender(max_items=30).fit(x)
    assert ease_memory_bytes(1_000_000) / 2**40 > 10  # 1M items: ~11 TiB, never attempted
    EaseRecommender(max_items=40).fit(x)  # at the limit it fits


def test_cli_ease_by_name_above_the_limit_exits_2_with_the_message(small_dataset_dir, tmp_path):
    from recsys.platform.cli import root as main

    res = CliRunner().invoke(main, ["train", "baselines", "--data-dir", str(small_dataset_dir), "--models", "ease",
                                    "--ease-max-items", "50"],
                             env={"RECSYS_MODEL_STORE_URI": str(tmp_path / "models")})
    assert res.exit_code == 2, res.output
    assert "EASE refuses" in res.output and "of memory" in res.output and "Traceback" not in res.output


def test_batched_evaluation_equals_unbatched(small_dataset):
    from recsys.platform.data.split import split_events
    from recsys.training.base import Catalog, interaction_matrix
    from recsys.training.baselines.item_knn import ItemKnnRecommender

    split = split_events(small_dataset.events, "global_time")
    catalog = Catalog.from_dataset(small_dataset)
    model = ItemKnnRecommender(20).fit(interaction_matrix(split.train, catalog))
    reports = [Evaluator.from_split(small_dataset, split, catalog, part="validation", bootstrap_samples=50,
                                    batch_size=b).evaluate("knn", model) for b in (7, 100_000)]
    assert reports[0].metrics.keys() == reports[1].metrics.keys()
    for name, value in reports[0].metrics.items():
        other = reports[1].metrics[name]
        np.testing.assert_allclose([value.value, value.lo, value.hi], [other.value, other.lo, other.hi],
                                   rtol=1e-12, err_msg=name)


class _CountingRecommender:
    """Wraps a model and counts the users it is asked to score (the evaluator's work is users x items)."""

    def __init__(self, model):
        self.model, self.users = model, []

    def recommend(self, users, user_items, n, filter_already_liked=True):
        self.users.extend(int(u) for u in users)
        return self.model.recommend(users, user_items, n=n, filter_already_liked=filter_already_liked)


def test_evaluator_max_users_bounds_the_scored_users(small_dataset):
    """``max_users`` (``recsys evaluate --max-users``, ``benchmarks/scale.py --eval-max-users``) scores a seeded
    sample: at most that many users are scored, the same ones on every run, and a bound at or above the number of
    evaluated users changes nothing (so ``--eval-max-users 6000`` keeps the 1x figures while bounding 4x / 16x)."""
    from recsys.platform.data.split import split_events
    from recsys.training.base import Catalog, interaction_matrix
    from recsys.training.baselines.item_knn import ItemKnnRecommender

    split = split_events(small_dataset.events, "global_time")
    catalog = Catalog.from_dataset(small_dataset)
    model = ItemKnnRecommender(20).fit(interaction_matrix(split.train, catalog))

    def run(max_users):
        counting = _CountingRecommender(model)
        report = Evaluator.from_split(small_dataset, split, catalog, part="validation", bootstrap_samples=50,
                                      max_users=max_users).evaluate("knn", counting)
        return report, counting.users

    full, full_users = run(None)
    n = len(full_users)
    assert n > 100
    same, _ = run(n)
    for name, value in full.metrics.items():
        assert same.metrics[name] == value, name
    half, half_users = run(n // 2)
    again, again_users = run(n // 2)
    assert len(half_users) == half.n_users == n // 2 and set(half_users) < set(full_users)
    assert half_users == again_users and half.metrics == again.metrics
