"""The recommendation pipeline as explicit stages, composed by :class:`recsys.serving.service.RecommendationService`.

    cache -> hydration.history -> candidates (embed, shards, item-kNN, popularity, filters)
          -> scoring (hydration + ranker | fallback) -> reranking -> exploration -> cache.store

Each stage is a small class with one ``async`` call and its own latency metric, testable alone.
"""

from recsys.serving.stages.base import RequestState, Target, guarded
from recsys.serving.stages.cache import ResultCacheStage
from recsys.serving.stages.candidates import CandidateGeneration, CandidateSet, ShardedRetrieval
from recsys.serving.stages.exploration import Exploration
from recsys.serving.stages.hydration import FeatureHydration
from recsys.serving.stages.reranking import Reranking
from recsys.serving.stages.scoring import Scoring

__all__ = [
    "CandidateGeneration",
    "CandidateSet",
    "Exploration",
    "FeatureHydration",
    "RequestState",
    "Reranking",
    "ResultCacheStage",
    "Scoring",
    "ShardedRetrieval",
    "Target",
    "guarded",
]
