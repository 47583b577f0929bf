"""Cold-start slices with CIs, and the simulated-new-item protocol, on the small synthetic dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.platform.data.split import split_events
from recsys.training.base import Catalog, interaction_matrix
from recsys.training.baselines import ItemKnnRecommender, PopularityRecommender
from recsys.training.evaluation import Evaluator
from recsys.training.evaluation_slices import (
    ContentRecommender,
    SliceEvaluator,
    new_item_recovery,
    new_items_in_window,
    recovery_table,
    slice_table,
    user_event_counts,
)


@pytest.fixture(scope="module")
def setup(small_dataset):
    split = split_events(small_dataset.events, "global_time")
    catalog = Catalog.from_dataset(small_dataset)
    history = pd.concat([split.train, split.validation])
    ev = Evaluator.from_split(small_dataset, split, catalog, part="test", bootstrap_samples=100, seed=1)
    return split, catalog, history, ev


def test_slices_partition_users_and_reproduce_the_overall_numbers(setup, small_dataset):
    split, catalog, history, ev = setup
    counts = user_event_counts(history, catalog)
    new = new_items_in_window(history, split.test, catalog)
    assert new.any() and not new[catalog.items.index_of(history["item_id"].unique())].any()
    cold_max = int(np.median(counts[ev.users]))
    sl = SliceEvaluator(ev, new, cold_max_events=cold_max, user_event_counts=counts)
    model = PopularityRecommender().fit(interaction_matrix(history, catalog))
    recs = ev.recommendations(model, max(ev.ks))
    rep = sl.evaluate_recommendations("popularity", recs)
    assert rep.n_users["cold_users"] + rep.n_users["warm_users"] == rep.n_users["all"] == len(ev.users)
    assert rep.n_users["cold_users"] > 0 and rep.n_users["warm_users"] > 0 and rep.n_users["new_items"] > 0
    overall = ev.evaluate_recommendations("popularity", recs).metrics
    for metric in ("recall@20", "ndcg@20", "hit_rate@10"):
        assert rep.metrics["all"][metric].value == pytest.approx(overall[metric].value)
        # the all-users value is the user-weighted mean of the two user slices
        c, w = rep.metrics["cold_users"][metric].value, rep.metrics["warm_users"][metric].value
        nc, nw = rep.n_users["cold_users"], rep.n_users["warm_users"]
        assert rep.metrics["all"][metric].value == pytest.approx((c * nc + w * nw) / (nc + nw))
        for s in ("cold_users", "warm_users", "new_items"):
            v = rep.metrics[s][metric]
            assert v.lo <= v.value <= v.hi
    # popularity never recommends an item without history events, so it cannot hit new-item targets
    assert rep.metrics["new_items"]["recall@20"].value == 0.0
    assert rep.metrics["all"]["new_item_share@20"].value == 0.0
    # attached to the evaluator, slices come with every evaluate() without running the model again
    attached = sl.attach()
    ev.evaluate("popularity", model)
    assert len(attached) == 1 and attached[0].metrics["cold_users"]["recall@20"].value == pytest.approx(
        rep.metrics["cold_users"]["recall@20"].value)
    ev.recommendation_hooks.clear()
    table = slice_table([rep])
    assert "| popularity | cold_users |" in table and "new_item_share@20" in table


def test_content_source_reaches_new_items_and_recovers_hidden_items_without_interactions(setup, small_dataset):
    split, catalog, history, ev = setup
    sl = SliceEvaluator(ev, new_items_in_window(history, split.test, catalog), 5, user_event_counts(history, catalog))
    content = ContentRecommender(small_dataset.items, catalog)
    rep = sl.evaluate_recommendations("content", ev.recommendations(content, max(ev.ks)))
    assert rep.metrics["all"]["new_item_share@20"].value > 0
    points = new_item_recovery(history, split.test, catalog,
                               {"item_knn": ItemKnnRecommender(50), "content": ContentRecommender(small_dataset.items,
                                                                                                  catalog)},
                               k_items=20, steps=(0, 20), seed=0, bootstrap_samples=100)
    by = {(p.source, p.interactions): p for p in points}
    # item-kNN cannot recommend an item with no interactions; content can, from metadata alone
    assert by[("item_knn", 0)].recall == 0.0
    assert by[("content", 0)].recall > 0.0
    assert by[("content", 0)].recall == pytest.approx(by[("content", 20)].recall, abs=0.05)
    # with interactions, item-kNN recovers the items
    assert by[("item_knn", 20)].recall > by[("item_knn", 0)].recall
    assert all(p.lo <= p.recall <= p.hi and p.pairs > 0 for p in points)
    assert "| content |" in recovery_table(points)
