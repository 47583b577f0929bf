"""``/v1/items/{id}/similar``: ANN neighbours of the item's vector merged with item-kNN co-occurrence.

An item the retrieval model does not know (posted after its training) is answered from the content
index: its metadata neighbours, plus ANN neighbours of the vector it borrows from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.serving.http.schemas import SimilarItem
from recsys.serving.models.artifacts import RetrievalArtifacts
from recsys.serving.models.bundle import Bundle
from recsys.serving.pipeline.candidates.content_index import borrow_embeddings
from recsys.serving.pipeline.candidates.sources import merge_candidates
from recsys.serving.pipeline.candidates.stage import ShardedRetrieval
from recsys.serving.pipeline.errors import UnknownItemError
from recsys.serving.pipeline.state import RequestState


class SimilarItems:
    def __init__(self, retrieval: ShardedRetrieval, live: Any = None):
        self.retrieval = retrieval
        self.live = live  # LiveCatalog (content index) or None

    async def __call__(self, state: RequestState, bundle: Bundle, art: RetrievalArtifacts, item_id: int,
                       n: int) -> list[SimilarItem]:
        knn_source = bundle.sources.item_knn
        row = int(art.item_index.lookup([item_id])[0])
        knn = knn_source.similar(item_id, n) if knn_source is not None else None
        content = self.live.content if self.live is not None else None
        by_content = content.similar(item_id, n) if content is not None and row < 0 else None
        if row < 0 and (knn is None or len(knn[0]) == 0) and (by_content is None or len(by_content[0]) == 0):
            raise UnknownItemError(item_id)
        lists = []
        vec = None
        if row >= 0:
            vec = np.asarray(art.item_embeddings[row : row + 1], np.float32)
        elif by_content is not None and len(by_content[0]):
            lists.append(("content", *by_content))
            borrowed, found = borrow_embeddings(content, np.array([item_id]), art.item_index, art.item_embeddings)
            vec = borrowed[:1] if found[0] else None
        if vec is not None:
            rows, scores = await self.retrieval(state, vec, n + 1, bundle.versions.retrieval)
            lists.append(("ann", art.item_ids[rows], scores))
        if knn is not None:
            lists.append(("item_knn", *knn))
        cands = merge_candidates(lists)
        cands = cands.subset(cands.item_ids != item_id)
        if row < 0 and by_content is not None and len(by_content[0]):
            # metadata similarity first: it is the only evidence about a brand-new item
            score = np.nan_to_num(cands.source_scores.get("content", np.zeros(len(cands))), nan=-1.0)
        elif vec is not None:
            score = art.vectors(cands.item_ids) @ vec[0]
        else:
            score = np.nan_to_num(cands.source_scores.get("item_knn", np.zeros(len(cands))))
        order = np.argsort(-score, kind="stable")[:n]
        return [SimilarItem(item_id=int(cands.item_ids[i]), score=float(score[i]), sources=cands.sources[i])
                for i in order]
