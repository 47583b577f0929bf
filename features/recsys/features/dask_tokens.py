"""Keep Feast's dask offline store fast on list-valued features.

Feast's file offline store runs on dask, and dask names every intermediate result by hashing
("tokenizing") its inputs.  For object-dtype columns (our list features: recent items, genre
weights, embeddings) dask falls back to pickling the whole column up to three times per token,
which made materializing 450k snapshot rows take >10 minutes (large numeric columns are
re-hashed with sha1 for every graph node too).  Inside :func:`fast_object_tokens`
object arrays that are not plain strings get a random token instead - exactly what dask itself
does for objects it cannot hash deterministically - so graphs are never wrongly shared, only not
de-duplicated.  The override is scoped and restored afterwards.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

_lock = threading.RLock()


@contextmanager
def fast_object_tokens() -> Iterator[None]:
    from dask.tokenize import normalize_token

    with _lock:
        original = normalize_token.dispatch(np.ndarray)

        def normalize_array(x: np.ndarray):
            if x.dtype.hasobject and x.size and not isinstance(x.flat[0], str | bytes):
                return ("object-array", x.shape, uuid.uuid4().hex)
            if x.size > 10_000:  # hashing big numeric columns again for every graph node is pure overhead
                return ("large-array", x.dtype.str, x.shape, uuid.uuid4().hex)
            return original(x)

        normalize_token.register(np.ndarray)(normalize_array)
        try:
            yield
        finally:
            normalize_token.register(np.ndarray)(original)
