"""Seeded synthetic interaction data that behaves like a real catalog.

There is no network at run time, so the platform ships its own data.  The generator plants
structure that models can learn and an evaluator can measure:

* item popularity follows a power law (a few blockbusters, a long tail);
* users and items live in a shared latent "taste" space built from genres, so preference is
  predictable from history (collaborative signal) and from genres/text (content signal);
* each user has a session window in time; events are timestamped and ordered, so time-based
  splits are meaningful; a slice of items is created late in the window (cold-start items);
* implicit events escalate view -> click -> purchase with affinity, and explicit 1-5 ratings
  correlate with affinity.

Everything is vectorised by blocks of users, so the default (6k users x 4k items x ~1M events)
takes seconds and 1M items stays within memory on a small machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.platform.data.schema import Dataset

GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western",
)  # fmt: skip
_GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "Action": ("explosive", "chase", "mercenary", "heist"),
    "Adventure": ("quest", "jungle", "treasure", "voyage"),
    "Animation": ("animated", "talking", "colorful", "toy"),
    "Children": ("family", "friendship", "school", "puppy"),
    "Comedy": ("hilarious", "awkward", "wedding", "roommates"),
    "Crime": ("detective", "mob", "robbery", "corrupt"),
    "Documentary": ("true", "archival", "investigation", "nature"),
    "Drama": ("grief", "family", "redemption", "struggle"),
    "Fantasy": ("dragon", "wizard", "kingdom", "enchanted"),
    "Film-Noir": ("shadowy", "femme", "fatale", "rain"),
    "Horror": ("haunted", "zombie", "curse", "scream"),
    "Musical": ("song", "dance", "broadway", "band"),
    "Mystery": ("clue", "disappearance", "secret", "puzzle"),
    "Romance": ("love", "kiss", "paris", "heartbreak"),
    "Sci-Fi": ("space", "alien", "robot", "future"),
    "Thriller": ("conspiracy", "hostage", "spy", "countdown"),
    "War": ("battle", "soldier", "trench", "resistance"),
    "Western": ("cowboy", "frontier", "outlaw", "saloon"),
}
_TITLE_WORDS = (
    "Last", "Silent", "Golden", "Broken", "Hidden", "Midnight", "Crimson", "Lost", "Electric", "Wild",
    "River", "Empire", "Garden", "Signal", "Harbor", "Storm", "Echo", "Horizon", "Engine", "Letter",
)  # fmt: skip
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA")
EPOCH_END = pd.Timestamp("2026-10-01T00:00:00Z")


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator; the defaults are the README's default dataset."""

    n_users: int = 6_000
    n_items: int = 4_000
    n_events: int = 1_000_000
    latent_dim: int = 16
    popularity_exponent: float = 0.9  # Zipf exponent of item popularity
    taste_temperature: float = 0.2  # lower = users stick closer to their tastes
    popularity_weight: float = 0.7  # weight of log-popularity next to taste when users pick items
    days: int = 180
    cold_item_fraction: float = 0.05  # items created inside the window (late arrivals)
    candidate_pool: int = 4_000  # items scored per user (whole default catalog; caps cost on 1M-item catalogs)
    seed: int = 42


def _item_table(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    n, g = cfg.n_items, len(GENRES)
    genre_centroids = rng.normal(size=(g, cfg.latent_dim)).astype(np.float32)
    # 1-3 genres per item, skewed towards popular genres (Drama/Comedy are big in MovieLens).
    genre_pop = rng.dirichlet(np.full(g, 1.5))
    n_genres = rng.choice([1, 2, 3], size=n, p=[0.5, 0.35, 0.15])
    primary = rng.choice(g, size=n, p=genre_pop)
    secondary = rng.choice(g, size=(n, 2), p=genre_pop)
    genre_lists: list[list[int]] = []
    vecs = np.empty((n, cfg.latent_dim), dtype=np.float32)
    noise = rng.normal(scale=0.6, size=(n, cfg.latent_dim)).astype(np.float32)
    for i in range(n):
        gl = [int(primary[i])]
        for s in secondary[i, : n_genres[i] - 1]:
            if int(s) not in gl:
                gl.append(int(s))
        genre_lists.append(gl)
        vecs[i] = genre_centroids[gl].mean(axis=0)
    vecs += noise
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-8

    start = EPOCH_END - pd.Timedelta(days=cfg.days)
    age_days = rng.exponential(scale=3 * 365, size=n)
    created = start - pd.to_timedelta(age_days, unit="D")
    cold = rng.random(n) < cfg.cold_item_fraction
    in_window = rng.uniform(0, cfg.days, size=n)
    created = pd.DatetimeIndex(
        np.where(cold, (start + pd.to_timedelta(in_window, unit="D")).asi8, created.asi8)
    ).tz_localize("UTC")
    years = created.year
    w1 = rng.integers(0, len(_TITLE_WORDS), size=n)
    w2 = rng.integers(0, len(_TITLE_WORDS), size=n)
    titles = [f"The {_TITLE_WORDS[a]} {_TITLE_WORDS[b]} ({y})" for a, b, y in zip(w1, w2, years, strict=True)]
    descriptions = []
    for i, gl in enumerate(genre_lists):
        words = [w for gi in gl for w in _GENRE_WORDS[GENRES[gi]]]
        pick = rng.choice(len(words), size=min(4, len(words)), replace=False)
        descriptions.append(
            f"A {' '.join(words[p] for p in pick)} story. {titles[i]} is a {'/'.join(GENRES[x] for x in gl)} title."
        )
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1, dtype=np.int64),
            "title": titles,
            "genres": ["|".join(GENRES[x] for x in gl) for gl in genre_lists],
            "description": descriptions,
            "created_at": created,
            "available": rng.random(n) > 0.02,
        }
    )
    return items, vecs


def generate(cfg: SyntheticConfig | None = None, progress: bool = True) -> Dataset:
    """Generate a :class:`Dataset` from ``cfg`` (deterministic for a given seed)."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    items, item_vecs = _item_table(cfg, rng)
    n_items, n_users = cfg.n_items, cfg.n_users

    # Power-law popularity over a random permutation of items; cold items start less popular.
    ranks = rng.permutation(n_items) + 1
    pop = ranks.astype(np.float64) ** (-cfg.popularity_exponent)
    pop /= pop.sum()
    log_pop = np.log(pop).astype(np.float32)
    # The popularity-drawn part of each candidate pool uses a flattened distribution, otherwise a
    # blockbuster would appear many times in one pool and be counted twice (pool + logit).
    pool_p = pop**0.3
    pool_p /= pool_p.sum()

    # Users: 1-2 favourite items' neighbourhoods define taste; activity is log-normal.
    anchors = rng.choice(n_items, size=(n_users, 2), p=pop)
    user_vecs = item_vecs[anchors].mean(axis=1) + rng.normal(scale=0.3, size=(n_users, cfg.latent_dim))
    user_vecs /= np.linalg.norm(user_vecs, axis=1, keepdims=True) + 1e-8
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    rows_per_interaction = 1.0 + 0.35 + 0.35 * 0.3 + 0.35 * 0.3  # view + click + purchase + rating
    n_inter = np.maximum(3, np.round(activity / activity.sum() * cfg.n_events / rows_per_interaction)).astype(np.int64)

    window_start = EPOCH_END - pd.Timedelta(days=cfg.days)
    span_ns = pd.Timedelta(days=cfg.days).value
    created_ns = items["created_at"].astype("int64").to_numpy()
    signup_frac = rng.uniform(0, 0.8, size=n_users)

    pool_size = min(cfg.candidate_pool, n_items)
    parts_u, parts_i, parts_t, parts_aff = [], [], [], []
    block = 500
    blocks = range(0, n_users, block)
    for b0 in tqdm(blocks, desc="generating events", unit="block", disable=not progress):
        users = np.arange(b0, min(b0 + block, n_users))
        nb = len(users)
        # Candidate pool: a popularity-drawn part (so blockbusters are reachable in huge catalogs)
        # and a uniform part (so the long tail is); taste and popularity then weigh the pool.
        n_pop = pool_size // 4
        pool = np.concatenate(
            [rng.choice(n_items, size=(nb, n_pop), p=pool_p), rng.integers(0, n_items, size=(nb, pool_size - n_pop))],
            axis=1,
        )
        aff = np.einsum("ud,upd->up", user_vecs[users], item_vecs[pool])
        logits = aff / cfg.taste_temperature + cfg.popularity_weight * log_pop[pool]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        cdf = np.cumsum(probs, axis=1)
        cdf /= cdf[:, -1:]
        for row, u in enumerate(users):
            k = int(n_inter[u])
            picks = np.searchsorted(cdf[row], rng.random(k))
            picks = np.minimum(picks, pool_size - 1)
            chosen = pool[row, picks]
            t0 = window_start.value + signup_frac[u] * span_ns
            t = np.sort(rng.uniform(t0, EPOCH_END.value, size=k)).astype(np.int64)
            # An item cannot be seen before it exists.
            t = np.maximum(t, created_ns[chosen] + 3_600_000_000_000)
            parts_u.append(np.full(k, u, dtype=np.int64))
            parts_i.append(chosen)
            parts_t.append(t)
            parts_aff.append(aff[row, picks])

    u = np.concatenate(parts_u)
    it = np.concatenate(parts_i)
    t = np.concatenate(parts_t)
    a = np.concatenate(parts_aff).astype(np.float32)
    # Escalation: affinity drives click, purchase and rating probabilities.
    z = (a - a.mean()) / (a.std() + 1e-8)
    p_click = 1 / (1 + np.exp(-(z * 1.2 - 0.6)))
    clicked = rng.random(len(z)) < p_click
    purchased = clicked & (rng.random(len(z)) < 1 / (1 + np.exp(-(z * 1.5 - 0.8))))
    rated = clicked & (rng.random(len(z)) < 0.3)
    ratings = np.clip(np.round(3.2 + 1.1 * z + rng.normal(scale=0.7, size=len(z))), 1, 5)

    minute = 60_000_000_000
    frames = [
        (np.ones(len(z), bool), "view", 0),
        (clicked, "click", minute),
        (purchased, "purchase", 5 * minute),
        (rated, "rating", 10 * minute),
    ]
    ev_u, ev_i, ev_t, ev_type, ev_r = [], [], [], [], []
    for mask, name, offset in frames:
        ev_u.append(u[mask])
        ev_i.append(it[mask])
        ev_t.append(np.minimum(t[mask] + offset, EPOCH_END.value - 1))
        ev_type.append(np.full(int(mask.sum()), name, dtype=object))
        ev_r.append(ratings[mask] if name == "rating" else np.full(int(mask.sum()), np.nan))
    events = pd.DataFrame(
        {
            "user_id": np.concatenate(ev_u) + 1,
            "item_id": np.concatenate(ev_i) + 1,
            "event_type": np.concatenate(ev_type),
            "rating": np.concatenate(ev_r).astype(np.float32),
            "timestamp": pd.to_datetime(np.concatenate(ev_t), utc=True),
        }
    )
    events = events.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1, dtype=np.int64),
            "signup_at": pd.to_datetime((window_start.value + signup_frac * span_ns).astype(np.int64), utc=True),
            "country": rng.choice(COUNTRIES, size=n_users),
        }
    )
    return Dataset(events=events, items=items, users=users, name="synthetic", meta=asdict(cfg)).validate()
