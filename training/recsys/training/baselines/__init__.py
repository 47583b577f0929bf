"""Baseline recommenders: popularity, item-kNN (cosine), ALS (implicit-feedback MF), BPR-MF and EASE.

Each answers :class:`recsys.training.base.Recommender` and saves the ``model.npz`` arrays that
serving's candidate sources read (docs/contracts.md).
"""

from recsys.training.baselines.als import AlsRecommender
from recsys.training.baselines.bpr import BprRecommender
from recsys.training.baselines.ease import EaseRecommender, EaseTooLargeError
from recsys.training.baselines.item_knn import ItemKnnRecommender
from recsys.training.baselines.popularity import PopularityRecommender

__all__ = ["AlsRecommender", "BprRecommender", "EaseRecommender", "EaseTooLargeError", "ItemKnnRecommender",
           "PopularityRecommender"]
