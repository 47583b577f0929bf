"""Contextual exploration for new items: LinUCB with parameters shared across items, state in Redis.

Why shared: a per-item (disjoint) LinUCB starts every brand-new item from nothing, which is exactly
the item we need to learn about. Here one ridge regression predicts the click probability of any
(user, item) pair from the features

    x(u, i) = [1, v_i, p_u * v_i]        (d = 1 + 2 * content_dims)

where ``v_i`` is the item's content vector (first ``content_dims`` SVD components of
:mod:`recsys.serving.pipeline.candidates.content_index`, re-normalised) and ``p_u`` the user's content profile (mean
content vector of the recent history; zeros for a user without one). ``v_i`` lets the model learn
which kinds of item get clicked; ``p_u * v_i`` (element-wise) learns how much matching the user's
taste matters per content direction. This is the shared part of Li et al.'s hybrid LinUCB (2010);
a new item is scored from its content on its first request.

Score: ``ucb = theta.x + alpha * sqrt(x' A^-1 x)`` with ``A = ridge * I + sum x x'``,
``theta = A^-1 b``, ``b = sum reward * x``. The slot is filled by a softmax over the pool's UCB
scores (``temperature``; small = almost argmax) instead of a hard argmax, so every candidate has a
known, non-zero probability: that probability (times the slot's own rate) is logged as the item's
propensity, which off-policy evaluation needs.

State: one Redis hash per model key (``A:i:j`` upper triangle, ``b:i``, ``n``, ``clicks``). Updates
are Lua scripts, so concurrent replicas never lose an increment:
* impression: ``A += x x'`` and the shown ``x`` is parked under ``{<key>}:pending:<user>:<item>`` (TTL);
* click / purchase: ``GETDEL`` the parked ``x`` and ``b += reward * x`` (once per impression, so a
  double click is not a double reward; a click on an item never shown by this slot changes nothing).
Each replica re-reads the hash at most every ``refresh_s`` and caches ``A^-1`` and ``theta``.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recsys.features.keys import linucb_pending_key, linucb_state_key

_IMPRESSION_LUA = """
local d = tonumber(ARGV[1])
local x = {}
for i = 1, d do x[i] = tonumber(ARGV[3 + i]) end
for i = 1, d do
  if x[i] ~= 0 then
    for j = i, d do
      if x[j] ~= 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'A:' .. (i - 1) .. ':' .. (j - 1), x[i] * x[j]) end
    end
  end
end
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[2]))
return 1
"""

_REWARD_LUA = """
local raw = redis.call('GETDEL', KEYS[2])
if not raw then return 0 end
local x = cjson.decode(raw)
local r = tonumber(ARGV[1])
for i = 1, #x do
  if x[i] ~= 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'b:' .. (i - 1), r * x[i]) end
end
redis.call('HINCRBYFLOAT', KEYS[1], 'clicks', r)
return 1
"""


class LinUCBConfig(BaseModel):
    """LinUCB knobs (``ServingConfig.linucb``); a variant picks it with ``reranking.exploration: linucb``."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(1.0, ge=0.0, le=100.0, description="Width of the confidence bonus")
    ridge: float = Field(1.0, gt=0.0, le=1e6, description="Prior precision (A starts at ridge * I)")
    content_dims: int = Field(16, ge=1, le=256, description="Content SVD components used as item features")
    temperature: float = Field(0.05, gt=0.0, le=10.0, description="Softmax temperature over UCB scores")
    refresh_s: float = Field(1.0, ge=0.0, le=3600.0, description="Re-read the Redis state at most this often")
    pending_ttl_s: int = Field(86_400, ge=1, description="How long a shown item waits for its click")
    key: str = Field("recsys:linucb", min_length=1, description="Redis key prefix of the model state")


def user_profile(content_vectors: np.ndarray, known: np.ndarray, dims: int, decay: float = 0.8) -> np.ndarray:
    """Recency-weighted mean of the history's content vectors (first ``dims``), unit length; zeros if none."""
    p = np.zeros(dims, np.float64)
    if len(content_vectors) and known.any():
        w = (decay ** np.arange(len(content_vectors))) * known
        p = (w[:, None] * content_vectors[:, :dims]).sum(0)
    n = np.linalg.norm(p)
    return (p / n if n > 0 else p).astype(np.float64)


def features(profile: np.ndarray, item_vectors: np.ndarray, dims: int) -> np.ndarray:
    """[n, 1 + 2 * dims] rows x(u, i) = [1, v_i, p_u * v_i] (``v_i`` re-normalised to unit length)."""
    v = np.asarray(item_vectors, np.float64)[:, :dims]
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.where(norm > 0, v / np.maximum(norm, 1e-12), 0.0)
    return np.concatenate([np.ones((len(v), 1)), v, v * profile[None, :dims]], axis=1)


class LinUCB:
    """Shared-parameter LinUCB whose sufficient statistics live in Redis (see module docstring)."""

    def __init__(self, redis_url: str, cfg: LinUCBConfig | None = None, seed: int | None = None,
                 timeout_s: float = 0.5):
        import redis

        from recsys.platform.redis_connect import is_cluster_url, redis_from_url

        self.cfg = cfg or LinUCBConfig()
        self.d = 1 + 2 * self.cfg.content_dims
        if is_cluster_url(redis_url):  # the state and pending keys share one hash tag: one slot per script
            self._r = redis_from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        else:
            self._r = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._impression = self._r.register_script(_IMPRESSION_LUA)
        self._reward = self._r.register_script(_REWARD_LUA)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._a_inv = np.eye(self.d) / self.cfg.ridge
        self._theta = np.zeros(self.d)
        self._n = 0
        self._loaded_at = -np.inf

    def close(self) -> None:
        self._r.close()

    @property
    def state_key(self) -> str:
        return linucb_state_key(self.cfg.key)

    def _pending_key(self, user_id: int, item_id: int) -> str:
        return linucb_pending_key(self.cfg.key, user_id, item_id)

    # ------------------------------------------------------------------ state
    def refresh(self, force: bool = False) -> None:
        """Re-read A and b from Redis (at most every ``refresh_s`` unless ``force``); blocking."""
        if not force and time.monotonic() - self._loaded_at < self.cfg.refresh_s:
            return
        raw = self._r.hgetall(self.state_key)
        a = np.eye(self.d) * self.cfg.ridge
        b = np.zeros(self.d)
        n = 0
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            val = float(v)
            if key.startswith("A:"):
                _, i, j = key.split(":")
                i, j = int(i), int(j)
                if i < self.d and j < self.d:
                    a[i, j] += val
                    if i != j:
                        a[j, i] += val
            elif key.startswith("b:"):
                i = int(key[2:])
                if i < self.d:
                    b[i] += val
            elif key == "n":
                n = int(val)
        a_inv = np.linalg.inv(a)
        with self._lock:
            self._a_inv, self._theta, self._n = a_inv, a_inv @ b, n
            self._loaded_at = time.monotonic()

    @property
    def impressions(self) -> int:
        return self._n

    def reset(self) -> None:
        """Forget everything learned (tests, or a new content encoder with other dimensions)."""
        self._r.delete(self.state_key)
        self._loaded_at = -np.inf

    # ------------------------------------------------------------------ decisions
    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean estimate theta.x, ucb) per feature row."""
        with self._lock:
            a_inv, theta = self._a_inv, self._theta
        mean = x @ theta
        width = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", x, a_inv, x), 0.0))
        return mean, mean + self.cfg.alpha * width

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax over UCB scores: the probability each candidate is picked for the slot."""
        _, ucb = self.scores(x)
        z = (ucb - ucb.max()) / self.cfg.temperature
        p = np.exp(z)
        return p / p.sum()

    def pick(self, item_ids: np.ndarray, x: np.ndarray) -> tuple[int, float] | None:
        """(item id, its pick probability) from the pool rows ``x``; None for an empty pool."""
        if len(item_ids) == 0:
            return None
        p = self.probabilities(x)
        with self._lock:
            j = int(self._rng.choice(len(p), p=p))
        return int(item_ids[j]), float(p[j])

    # ------------------------------------------------------------------ updates (Redis, atomic)
    def record_impression(self, user_id: int, item_id: int, x: np.ndarray) -> None:
        """``A += x x'`` and park ``x`` until the user's click (or the TTL)."""
        xs = [float(f"{v:.6g}") for v in np.asarray(x, np.float64).tolist()]
        self._impression(keys=[self.state_key, self._pending_key(user_id, item_id)],
                         args=[self.d, self.cfg.pending_ttl_s, json.dumps(xs), *xs])

    def record_reward(self, user_id: int, item_id: int, reward: float = 1.0) -> bool:
        """``b += reward * x`` of the parked impression; False when there was none (not shown by the slot)."""
        return bool(self._reward(keys=[self.state_key, self._pending_key(user_id, item_id)], args=[float(reward)]))
