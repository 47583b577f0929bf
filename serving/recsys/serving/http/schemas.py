"""Request/response models of the HTTP API, shared by the server, the CLI client and the OpenAPI docs.

Static bounds live here (types, ranges that never change); configurable limits (``n`` vs
``limits.max_n``, ``exclude`` length) are checked by the service against :class:`LimitsConfig`
and reported in the same 422 shape FastAPI uses, so clients parse one error format.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, create_model

from recsys.experiments.variant_params import RerankDefaults  # the one declaration of the re-ranking knobs

EventType = Literal["view", "click", "purchase", "rating"]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EVENT_ID_MAX = 2**53 - 1
"""Largest id an event may carry (= FeatureStoreConfig.max_entity_id's default): each id costs Redis memory
until its TTL, and 2**53-1 is the largest integer every JSON client reads back exactly."""


def _integral_number(v: Any) -> Any:
    """JSON ``51.0`` is an integer to JSON Schema: accept it as 51. Everything else is left to the strict
    int check, so ``true``, ``"51"`` and ``51.5`` are refused (the schema says integer, the server agrees)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


JsonInt = Annotated[int, BeforeValidator(_integral_number)]
"""An integer field of a request: integral numbers only, never a boolean or a string."""
ItemId = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX), BeforeValidator(_integral_number)]
WindowInt = Annotated[int, Field(ge=1, le=1000), BeforeValidator(_integral_number)]
# (bounds before the validator in one Annotated: nested Annotated + Optional makes pydantic publish raw "ge"/"le")
MAX_EVENTS_PER_CALL = 1000
"""Most events one ``POST /v1/events`` may carry (the ingestion module enforces the same number)."""
RATING_MIN, RATING_MAX = 1.0, 5.0
def rfc3339_pattern(year: str, leap_year: str) -> str:
    """An RFC 3339 date-time pattern whose every match is a real calendar date.

    ``year`` matches the accepted years, ``leap_year`` those of them that have a 29 February. Why the
    month/day table in a regex: the OpenAPI schema must promise exactly what the server accepts, so a
    pattern that let 2026-02-30 through would publish a lie, and one limited to days 01-28 (as before)
    refused every event dated the 29th-31st."""
    month_day = (r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
                 r"|02-(0[1-9]|1[0-9]|2[0-8]))")
    return (rf"^({year}-{month_day}|({leap_year})-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            r"(\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$")


TIMESTAMP_PATTERN = rfc3339_pattern(r"20[0-9]{2}", r"20(0[048]|[2468][048]|[13579][26])")
"""RFC 3339 date-time in years 2000-2099 (every match is a real date, 29 February in leap years only).

Why a pattern and not ``format: date-time`` alone: the schema must promise exactly what the server
accepts, and the server refuses times before 2000 (unix-seconds-vs-ms mistakes)."""
_STRICT = ConfigDict(extra="forbid", strict=True)  # JSON true is not 1, "5" is not 5


class Filters(BaseModel):
    model_config = _STRICT

    include_genres: list[str] = Field(default_factory=list, max_length=100,
                                      description="Keep only items having at least one of these genres")
    exclude_genres: list[str] = Field(default_factory=list, max_length=100,
                                      description="Drop items having any of these genres")
    available_only: bool = Field(True, description="Drop items the catalog marks unavailable")
    exclude_seen: bool = Field(True, description="Drop items in the user's recent history")


REQUEST_RERANK_KNOBS = ("mmr_lambda", "max_per_genre", "genre_window", "freshness_weight")
"""The re-ranking knobs a request may override (the freshness half-life stays a server/variant setting)."""


def _request_knob(name: str) -> tuple[Any, Any]:
    """A request field for the knob ``name`` of :class:`RerankDefaults` (its one declaration): the same
    bounds and description, optional (unset = the variant's or the server's value); integers accept
    JSON's integral numbers as :data:`WindowInt` does."""
    f = RerankDefaults.model_fields[name]
    bounds = {k: v for m in f.metadata for k in ("ge", "gt", "le", "lt") if (v := getattr(m, k, None)) is not None}
    if f.annotation is int:  # bounds inside the one Annotated (see WindowInt)
        return Annotated[int, Field(**bounds), BeforeValidator(_integral_number)] | None, Field(
            None, description=f.description)
    return f.annotation | None, Field(None, description=f.description, **bounds)


DiversityOverrides = create_model(
    "DiversityOverrides",
    __config__=_STRICT,
    __doc__="Per-request re-ranking knobs; unset fields use the experiment variant's or the server defaults.",
    __module__=__name__,
    **{name: _request_knob(name) for name in REQUEST_RERANK_KNOBS},
    exploration=(bool | None, Field(None, description="False disables the exploration slot for this request")),
)


class RecommendationRequest(BaseModel):
    model_config = _STRICT

    user_id: JsonInt = Field(..., ge=INT64_MIN, le=INT64_MAX, description="Raw user id (unknown ids = cold start)")
    n: JsonInt = Field(10, ge=1, description="Number of items (<= limits.max_n)")
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
    ranking: Literal["ranker", "retrieval_only", "cold_start"] = Field(
        "ranker", description="How the list was ordered: by the ranker, by retrieval score (no ranker promoted - "
        "e.g. refused by the promotion gate - or the ranker/features unavailable), or the cold-start blend")
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


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: JsonInt = Field(..., ge=0, le=EVENT_ID_MAX, description="Any user id in 0..2**53-1 (the feature "
                             "store's default max_entity_id); new users are welcome")
    item_id: JsonInt = Field(..., ge=0, le=EVENT_ID_MAX, description="Any item id in 0..2**53-1")
    timestamp: str | None = Field(None, pattern=TIMESTAMP_PATTERN,
                                  description="RFC 3339 time, years 2000-2099; default: now. A time ahead of the "
                                              "server clock (beyond the allowed skew) counts as now.")
    event_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
                                 description="Client id of the event (default: generated)")
    request_id: str | None = Field(None, max_length=128, description="Recommendation request this event follows")


class InteractionEvent(_EventBase):
    """An implicit event (no rating)."""

    event_type: Literal["view", "click", "purchase"]


class RatingEvent(_EventBase):
    """An explicit rating."""

    event_type: Literal["rating"]
    rating: float = Field(..., ge=RATING_MIN, le=RATING_MAX)


EventIn = Annotated[InteractionEvent | RatingEvent, Field(discriminator="event_type")]
"""One event; ``event_type`` decides whether ``rating`` is required (rating) or not allowed (the others)."""


class EventBatch(RootModel[list[EventIn]]):
    """A batch: all events validate or none is accepted."""

    root: list[EventIn] = Field(..., min_length=1, max_length=MAX_EVENTS_PER_CALL)


class EventAccepted(BaseModel):
    """202: the events are in the durable event log; online features follow within about a second."""

    accepted: int = Field(description="Number of events accepted")
    event_ids: list[str] = Field(description="One id per event, in request order")


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
