"""Request/response models of the HTTP API, shared by the server, the CLI client and the OpenAPI docs.

Static bounds live here (types, ranges that never change); configurable limits (``n`` vs
``limits.max_n``, ``exclude`` length) are checked by the service against :class:`LimitsConfig`
and reported in the same 422 shape FastAPI uses, so clients parse one error format.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EventType = Literal["view", "click", "purchase", "rating"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ItemId = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_genres: list[str] = Field(default_factory=list, max_length=100,
                                      description="Keep only items having at least one of these genres")
    exclude_genres: list[str] = Field(default_factory=list, max_length=100,
                                      description="Drop items having any of these genres")
    available_only: bool = Field(True, description="Drop items the catalog marks unavailable")
    exclude_seen: bool = Field(True, description="Drop items in the user's recent history")


class DiversityOverrides(BaseModel):
    """Per-request re-ranking knobs; unset fields use the experiment variant's or the server defaults."""

    model_config = ConfigDict(extra="forbid")

    mmr_lambda: float | None = Field(None, ge=0.0, le=1.0, description="1 = relevance only, 0 = diversity only")
    max_per_genre: int | None = Field(None, ge=1, le=1000, description="Genre cap inside the first genre_window")
    genre_window: int | None = Field(None, ge=1, le=1000)
    freshness_weight: float | None = Field(None, ge=0.0, le=1.0)
    exploration: bool | None = Field(None, description="False disables the exploration slot for this request")


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(..., ge=INT64_MIN, le=INT64_MAX, description="Raw user id (unknown ids = cold start)")
    n: int = Field(10, ge=1, description="Number of items (<= limits.max_n)")
    context: dict[str, Any] = Field(default_factory=dict, description="Request context, e.g. {'genres': [...]}")
    exclude: list[ItemId] = Field(default_factory=list, description="Item ids never to return (<= limits.max_exclude)")
    history: list[ItemId] | None = Field(None, description="Recent item ids, most recent first (else: feature store)")
    filters: Filters = Field(default_factory=Filters)
    diversity: DiversityOverrides = Field(default_factory=DiversityOverrides)


class RecommendedItem(BaseModel):
    item_id: int
    score: float
    rank: int
    sources: list[str] = Field(description="Candidate sources: ann, item_knn, sasrec, popularity, exploration")
    genres: list[str] = Field(default_factory=list)
    title: str | None = Field(None, description="Catalog title (None when the catalog has none)")


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: int
    items: list[RecommendedItem]
    model_versions: dict[str, str]
    degraded: bool = False
    degraded_reasons: list[str] = Field(default_factory=list)
    cold_start: bool = False
    experiment: str | None = None
    variant: str | None = None
    cached: bool = Field(False, description="Served from the result cache (same user, variant, request shape)")


class SimilarItem(BaseModel):
    item_id: int
    score: float
    sources: list[str]
    title: str | None = None
    genres: list[str] = Field(default_factory=list)


class SimilarItemsResponse(BaseModel):
    item_id: int
    items: list[SimilarItem]
    model_versions: dict[str, str]
    degraded: bool = False
    degraded_reasons: list[str] = Field(default_factory=list)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(..., ge=INT64_MIN, le=INT64_MAX)
    item_id: int = Field(..., ge=INT64_MIN, le=INT64_MAX)
    event_type: EventType
    rating: float | None = Field(None, ge=0.0, le=10.0, description="Only for event_type=rating")
    timestamp: datetime | None = Field(None, description="ISO-8601; default: now (UTC)")


class EventAccepted(BaseModel):
    accepted: bool
    detail: str | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    model_versions: dict[str, str]
    feature_mode: str
    experiments: bool
    detail: str | None = None


class ReloadResponse(BaseModel):
    changed: bool
    model_versions: dict[str, str]
    previous: dict[str, str]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorDetail] | str
