"""The re-ranking parameters a variant may set: ONE schema for experiment configs and serving.

The experiment config validates ``variants[].reranking`` with `RerankingParams`, and serving builds
its re-ranking settings from the same model (`RerankingParams.apply` over its defaults). So a name
that serving does not read (a typo, or ``diversity_lambda`` when the re-ranker reads ``mmr_lambda``)
or a value of the wrong type fails `recsys experiments validate` and the router's load, never a
request, and a treatment can no longer silently equal control.

Strict types: ``"0.3"`` (a string) or ``true`` for a number is an error, an integer is accepted
where a float is expected.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RerankingParams(BaseModel):
    """Re-ranking knobs (MMR diversity, genre cap, freshness). Unset fields mean "serving's default"."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mmr_lambda: float | None = Field(None, ge=0.0, le=1.0, description="1 = pure relevance, 0 = pure diversity")
    max_per_genre: int | None = Field(None, ge=1, le=1000, description="genre cap inside the first genre_window")
    genre_window: int | None = Field(None, ge=1, le=1000, description="how many top slots the genre cap covers")
    freshness_weight: float | None = Field(None, ge=0.0, le=1.0, description="boost for recently created items")
    freshness_half_life_days: float | None = Field(None, gt=0.0, le=3650.0, description="age at which it halves")
    # the exploration slot (serving's Exploration stage reads these; the rate is capped by exploration_max_rate)
    exploration: Literal["thompson", "linucb"] | None = Field(None, description="policy of the exploration slot")
    exploration_rate: float | None = Field(None, ge=0.0, le=1.0, description="share of requests given the slot")

    def overrides(self) -> dict[str, Any]:
        """Only the fields the variant set (what `Assignment.reranking` carries)."""
        return self.model_dump(exclude_none=True)

    def apply(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """``defaults`` with this variant's overrides on top (serving: its configured `RerankDefaults`)."""
        return {**defaults, **self.overrides()}


EXPLORATION_FIELDS = ("exploration", "exploration_rate")
RERANKING_FIELDS = tuple(f for f in RerankingParams.model_fields if f not in EXPLORATION_FIELDS)
"""The knobs of the re-ranker itself (``RerankParams``); the exploration fields go to the Exploration stage."""
