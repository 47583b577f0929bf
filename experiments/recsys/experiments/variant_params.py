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

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo


class RerankDefaults(BaseModel):
    """The re-ranker's knobs, each declared ONCE here: bounds, description and serving's default.

    Serving's config field ``rerank`` is this model; :class:`RerankingParams` (what a variant may set:
    the same fields, unset by default) and the re-ranker's ``RerankParams`` are derived from it, so a
    new knob is one line here plus its use in ``recsys.serving.pipeline.reranking.rules``.
    """

    model_config = ConfigDict(extra="forbid")

    mmr_lambda: float = Field(0.8, ge=0.0, le=1.0, description="1 = pure relevance, 0 = pure diversity")
    max_per_genre: int = Field(2, ge=1, le=1000, description="Genre cap inside the first `genre_window` slots")
    genre_window: int = Field(5, ge=1, le=1000, description="How many top slots the genre cap applies to")
    freshness_weight: float = Field(0.1, ge=0.0, le=1.0, description="Boost for recently created items")
    freshness_half_life_days: float = Field(30.0, gt=0.0, le=3650.0, description="Age at which the boost halves")


def _unset_by_default(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s fields as optional with default None, bounds and descriptions kept ("unset = default")."""
    return {name: (f.annotation | None, FieldInfo.merge_field_infos(f, default=None))
            for name, f in model.model_fields.items()}


class _VariantParams(BaseModel):
    """Re-ranking knobs (MMR diversity, genre cap, freshness). Unset fields mean "serving's default"."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def overrides(self) -> dict[str, Any]:
        """Only the fields the variant set (what `Assignment.reranking` carries)."""
        return self.model_dump(exclude_none=True)

    def apply(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """``defaults`` with this variant's overrides on top (serving: its configured `RerankDefaults`)."""
        return {**defaults, **self.overrides()}


RerankingParams = create_model(
    "RerankingParams",
    __base__=_VariantParams,
    __module__=__name__,
    **_unset_by_default(RerankDefaults),
    # the exploration slot (serving's Exploration stage reads these; the rate is capped by exploration_max_rate)
    exploration=(Literal["thompson", "linucb"] | None, Field(None, description="policy of the exploration slot")),
    exploration_rate=(float | None, Field(None, ge=0.0, le=1.0, description="share of requests given the slot")),
)
RerankingParams.__doc__ = _VariantParams.__doc__


EXPLORATION_FIELDS = ("exploration", "exploration_rate")
RERANKING_FIELDS = tuple(RerankDefaults.model_fields)
"""The knobs of the re-ranker itself (``RerankParams``); the exploration fields go to the Exploration stage."""
