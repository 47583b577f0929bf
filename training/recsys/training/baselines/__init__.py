"""Baseline recommenders: popularity, item-kNN (cosine) and ALS (implicit-feedback MF).

Each answers :class:`recsys.training.base.Recommender` and saves the ``model.npz`` arrays that
serving's candidate sources read (docs/contracts.md).
"""

from recsys.training.baselines.als import AlsRecommender
from recsys.training.baselines.item_knn import ItemKnnRecommender
from recsys.training.baselines.popularity import PopularityRecommender

__all__ = ["AlsRecommender", "ItemKnnRecommender", "PopularityRecommender"]
