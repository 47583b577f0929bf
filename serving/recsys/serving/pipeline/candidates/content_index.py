"""Content-based item vectors from catalog metadata, indexed in FAISS, that grow without retraining.

Why: the two-tower model gives an item an embedding only at the next training run, so a brand-new
item is invisible to ANN retrieval and item-kNN. Its title, genres, year and description are known
the moment it is posted, and they are enough to find items like it.

Profile of an item (one text per item, :func:`profile_text`): title words and title word bigrams,
genre tokens (``g_sci_fi``, repeated ``genre_weight`` times so genres outweigh a single title word),
decade and year tokens, description words. Vectoriser: scikit-learn's ``HashingVectorizer``
(stateless: a new item's words need no vocabulary refit) -> ``TfidfTransformer`` (idf fitted once on
the catalog at build time; an unseen hashed word gets the maximal idf) -> ``TruncatedSVD`` to
``dim`` dimensions (fitted once on up to ``fit_sample`` items) -> L2 normalisation. The fitted
pipeline is then a pure function, so any later item is encoded in microseconds and added to a FAISS
``IndexIDMap2(IndexFlatIP)`` keyed by the raw item id (exact inner product = cosine; ids let an
update replace an item in place).

:func:`borrow_embeddings` gives a new item a *retrieval-space* vector as the similarity-weighted mean
of the two-tower embeddings of its content neighbours that have one, so the ranker's
``retrieval_score`` means something for it before the next training run.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

_WORD_RE = re.compile(r"[a-z0-9]+")
_YEAR_RE = re.compile(r"\((\d{4})\)")


@dataclass(frozen=True)
class ContentConfig:
    """Knobs of the content profile and its index (defaults are reasonable guesses, not tuned on any window)."""

    dim: int = 64
    hash_features: int = 2**18
    genre_weight: int = 3
    fit_sample: int = 100_000
    seed: int = 0


def _genre_list(genres: Any) -> list[str]:
    if genres is None or (isinstance(genres, float) and np.isnan(genres)):
        return []
    if isinstance(genres, list | tuple | np.ndarray):
        return [str(g) for g in genres if str(g)]
    return [g for g in str(genres).split("|") if g]


def _year_of(row: dict[str, Any]) -> int | None:
    year = row.get("year")
    if year is not None and not (isinstance(year, float) and np.isnan(year)):
        return int(year)
    m = _YEAR_RE.search(str(row.get("title") or ""))
    if m:
        return int(m.group(1))
    created = row.get("created_at")
    if created is not None and not pd.isna(created):
        return int(pd.Timestamp(created).year)
    return None


def profile_text(row: dict[str, Any], genre_weight: int = 3) -> str:
    """One item's profile as a token string (title words + bigrams, genre/decade/year tokens, description)."""
    title = _YEAR_RE.sub(" ", str(row.get("title") or "")).lower()
    words = [w for w in _WORD_RE.findall(title) if w not in ("the", "a", "an", "of")]
    tokens = list(words) + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]
    for g in _genre_list(row.get("genres")):
        tokens += [f"g_{'_'.join(_WORD_RE.findall(g.lower()))}"] * genre_weight
    year = _year_of(row)
    if year is not None:
        tokens += [f"decade_{year // 10 * 10}", f"year_{year}"]
    desc = row.get("description")
    if desc is not None and not (isinstance(desc, float) and np.isnan(desc)):
        tokens += [w for w in _WORD_RE.findall(str(desc).lower()) if len(w) > 2]
    return " ".join(tokens)


def _texts(items: pd.DataFrame, genre_weight: int) -> list[str]:
    return [profile_text(r, genre_weight) for r in items.to_dict("records")]


class ContentEncoder:
    """Hashed tokens -> tf-idf -> truncated SVD -> unit vectors; fitted once, then a pure function."""

    def __init__(self, cfg: ContentConfig | None = None):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.cfg = cfg or ContentConfig()
        # whitespace tokens (profile_text already tokenised); alternate_sign off: counts stay >= 0 for tf-idf
        self.hasher = HashingVectorizer(n_features=self.cfg.hash_features, token_pattern=r"\S+", lowercase=False,
                                        alternate_sign=False, norm=None)
        self.tfidf: Any = None
        self.svd: Any = None
        self.active = np.zeros(0, np.int64)  # hashed columns seen at fit time (the SVD's input space)
        self.dim = 0

    def fit(self, items: pd.DataFrame) -> ContentEncoder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        if len(items) < 2:
            raise ValueError("the content encoder needs at least 2 catalog items to fit")
        rng = np.random.default_rng(self.cfg.seed)
        sample = items if len(items) <= self.cfg.fit_sample else items.iloc[
            np.sort(rng.choice(len(items), self.cfg.fit_sample, replace=False))]
        counts = self.hasher.transform(_texts(sample, self.cfg.genre_weight))
        self.tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
        x = self.tfidf.transform(counts)
        # SVD only over hashed columns that occur: the same components (the others are all-zero
        # columns), at a fraction of the cost of a randomized SVD over 2^18 columns
        self.active = np.flatnonzero(x.getnnz(axis=0))
        x = x[:, self.active]
        self.dim = int(min(self.cfg.dim, x.shape[0] - 1, max(x.shape[1] - 1, 1)))
        with threadpool_limits(limits=1):  # BLAS threads on a shared box: 10x slower than one thread here
            self.svd = TruncatedSVD(n_components=self.dim, random_state=self.cfg.seed).fit(x)
        return self

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        """[n, dim] float32, L2-normalised (an item with no known token gets the zero vector)."""
        if self.svd is None:
            raise RuntimeError("ContentEncoder.transform before fit")
        if len(items) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = self.tfidf.transform(self.hasher.transform(_texts(items, self.cfg.genre_weight)))[:, self.active]
        with threadpool_limits(limits=1):
            v = self.svd.transform(x).astype(np.float32)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        return np.where(norm > 0, v / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


class ContentIndex:
    """FAISS inner-product index over content vectors keyed by raw item id; ``add`` is safe at any time.

    Reads and writes share one lock: FAISS flat search is fast (4k items: ~20 µs), and an ``add``
    must never run concurrently with a search on the same index.
    """

    source = "content"

    def __init__(self, encoder: ContentEncoder):
        import faiss

        # one query at a time over a few thousand rows: OpenMP threads only contend (18 ms -> 2 ms
        # per request measured on the shared box); process-wide, as retrieval_shard.py does
        faiss.omp_set_num_threads(1)
        self.encoder = encoder
        self.dim = encoder.dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._lock = threading.Lock()
        self._ids: set[int] = set()

    @classmethod
    def build(cls, items: pd.DataFrame, cfg: ContentConfig | None = None) -> ContentIndex:
        """Fit the encoder on ``items`` (the catalog) and index every item of it."""
        index = cls(ContentEncoder(cfg).fit(items))
        index.add(items)
        return index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._ids

    def add(self, items: pd.DataFrame) -> int:
        """Encode and index ``items`` (columns item_id, title, genres, ...); re-adding an id replaces it."""
        if len(items) == 0:
            return 0
        items = items.drop_duplicates("item_id", keep="last")
        ids = items["item_id"].to_numpy(np.int64)
        vecs = self.encoder.transform(items)
        with self._lock:
            present = np.array([i for i in ids.tolist() if i in self._ids], np.int64)
            if len(present):
                self._index.remove_ids(present)
            self._index.add_with_ids(vecs, ids)
            self._ids.update(ids.tolist())
        return len(ids)

    def vectors(self, item_ids: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """([n, dim] content vectors, [n] bool known); unknown ids get zero rows."""
        ids = np.asarray(item_ids, np.int64).reshape(-1)
        out = np.zeros((len(ids), self.dim), np.float32)
        known = np.array([int(i) in self._ids for i in ids], bool)
        with self._lock:
            for j in np.flatnonzero(known):
                out[j] = self._index.reconstruct(int(ids[j]))
        return out, known

    def search(self, query: np.ndarray, k: int, exclude: set[int] | frozenset[int] = frozenset()):
        """Top-``k`` (ids, cosine) for one query vector, skipping ``exclude``."""
        q = np.asarray(query, np.float32).reshape(1, -1)
        if k <= 0 or len(self) == 0 or not np.any(q):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        with self._lock:
            scores, ids = self._index.search(q, min(k + len(exclude), len(self)))
        keep = (ids[0] >= 0) & ~np.isin(ids[0], np.fromiter(exclude, np.int64, len(exclude)))
        return ids[0][keep][:k].astype(np.int64), scores[0][keep][:k].astype(np.float32)

    def similar(self, item_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Content neighbours of an indexed item (itself excluded); empty for an unknown item."""
        vec, known = self.vectors([item_id])
        if not known[0]:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return self.search(vec[0], k, exclude={int(item_id)})

    def from_history(self, history: list[int], k: int, recency_decay: float = 0.8):
        """Neighbours of the user's recent items (most recent first, weights ``decay**pos``), history excluded.

        This is what lets a new user's first clicks pull in items like them, new items included.
        """
        if not history or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        vecs, known = self.vectors(history)
        if not known.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        from recsys.platform.ranking_features import content_profile  # the ranker's content column uses it too

        profile = content_profile(vecs[None], known[None], recency_decay)[0]
        if not profile.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return self.search(profile, k, exclude={int(h) for h in history})


def borrow_embeddings(content: ContentIndex, item_ids: np.ndarray, id_index: Any, embeddings: np.ndarray,
                      k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Retrieval-space vectors for items the two-tower model does not know, from their content neighbours.

    For each id: the cosine-weighted mean of the embeddings of its ``k`` nearest content neighbours
    that have a row in ``id_index`` (the retrieval artifact's), L2-normalised. Returns
    ([n, D] float32, [n] bool found); rows stay zero when an item has no content vector or no
    neighbour with an embedding.
    """
    ids = np.asarray(item_ids, np.int64).reshape(-1)
    out = np.zeros((len(ids), embeddings.shape[1]), np.float32)
    found = np.zeros(len(ids), bool)
    for j, item in enumerate(ids.tolist()):
        nb, sims = content.similar(item, 4 * k)
        rows = id_index.lookup(nb)
        keep = (rows >= 0) & (sims > 0)
        rows, sims = rows[keep][:k], sims[keep][:k]
        if len(rows) == 0:
            continue
        v = (sims[:, None] * np.asarray(embeddings[rows], np.float32)).sum(0)
        n = float(np.linalg.norm(v))
        if n > 0:
            out[j], found[j] = v / n, True
    return out, found
