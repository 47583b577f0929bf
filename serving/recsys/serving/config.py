"""The serving component's one configuration object, validated once and passed down.

``build_app(args)`` (Serve's application builder, also what KubeRay's ``serveConfigV2`` calls)
turns its ``args`` dict into a :class:`ServingConfig`; every deployment receives the same object,
so a knob is defined, documented and range-checked in exactly one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.experiments.variant_params import RerankDefaults  # the one declaration of the re-ranking knobs
from recsys.platform.log_archiver import LogArchiveConfig
from recsys.serving.http.auth import SecurityConfig
from recsys.serving.pipeline.cache.result_cache import CacheConfig
from recsys.serving.pipeline.exploration.linucb import LinUCBConfig

AnnKind = Literal["auto", "flat", "hnsw", "ivfpq"]


class LimitsConfig(BaseModel):
    """Request limits: anything above is refused with a 422 naming the field (cheap to check)."""

    model_config = ConfigDict(extra="forbid")

    max_n: int = Field(100, ge=1, le=1000, description="Largest `n` a client may ask for")
    max_exclude: int = Field(1000, ge=0, le=100_000, description="Longest `exclude` list accepted")
    max_history: int = Field(200, ge=0, le=10_000, description="Longest client-supplied `history` accepted")
    max_context_keys: int = Field(32, ge=0, le=1000, description="Most keys accepted in `context`")
    max_similar_n: int = Field(100, ge=1, le=1000, description="Largest `n` for /v1/items/{id}/similar")
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576,
                                description="Largest request body; bigger -> 413 before any parsing")


class OnlineStateConfig(BaseModel):
    """How long the real-time state this replica writes lives in Redis (passed to ``recsys.features``).

    Why here: these lifetimes bound Redis (docs/operations.md, "Bounded state"), so a deployment must be able
    to set them; the 30-day soak (benchmarks/months.py) scales them to its simulated clock."""

    model_config = ConfigDict(extra="forbid")

    user_ttl_s: int = Field(31 * 86400, ge=0, description="A user's real-time keys expire this long after their "
                            "last event (0 = never): a user who returns later is cold again")
    item_ttl_s: int = Field(31 * 86400, ge=0, description="Same for an item's real-time counters")
    event_id_ttl_s: int = Field(86400, ge=1, description="How long a client event id is remembered (retry dedupe)")
    stream_retention_s: float = Field(3600.0, ge=0, description="Applied event-stream entries kept this long")

    def store_kwargs(self) -> dict[str, int]:
        """The ``FeatureStoreConfig`` fields these set."""
        return {"online_user_ttl_s": self.user_ttl_s, "online_item_ttl_s": self.item_ttl_s,
                "event_id_ttl_s": self.event_id_ttl_s}


class CandidateSourceConfig(BaseModel):
    """One extra candidate source (``recsys.serving.pipeline.candidates.registry``): a module and its model."""

    model_config = ConfigDict(extra="forbid")

    module: str = Field(pattern=r"^[A-Za-z_][\w.]*$", description="Importable module with load(store, version)")
    model: str = Field(min_length=1, description="Model-store name; its promoted version is loaded")
    k: int = Field(50, ge=1, le=5000, description="Candidates per request")
    needs_history: bool = Field(False, description="Asked only when the user has recent history")


RESERVED_SOURCE_NAMES = ("ann", "content", "exploration", "popularity", "item_knn", "sequential", "sasrec",
                         "retrieval", "ranking")


class MovableStage(BaseModel):
    """A stage that holds a model: in the ingress replica (``local``) or behind a Serve deployment handle."""

    model_config = ConfigDict(extra="forbid")

    placement: Literal["local", "deployment"]


class IngressStage(BaseModel):
    """A stage that works on request-local arrays only; shipping them over a handle would only add a hop."""

    model_config = ConfigDict(extra="forbid")

    placement: Literal["local"] = "local"


class StagesConfig(BaseModel):
    """``stages.<name>.placement``; defaults measured with benchmarks/serve_overhead.py (docs/serving.md).

    On a 2-core box an in-process ranker beats a Ranker deployment: the handle hop (serialization,
    scheduling, a second process competing for the cores) costs more than the forward pass it
    moves. Retrieval stays in shard deployments whenever ``num_shards > 1`` (each shard is its own
    index and replica set); with one shard it may run in the ingress.
    """

    model_config = ConfigDict(extra="forbid")

    retrieval: MovableStage = Field(default_factory=lambda: MovableStage(placement="deployment"))
    ranking: MovableStage = Field(default_factory=lambda: MovableStage(placement="local"))
    cache: IngressStage = Field(default_factory=IngressStage)
    hydration: IngressStage = Field(default_factory=IngressStage)
    candidates: IngressStage = Field(default_factory=IngressStage)
    reranking: IngressStage = Field(default_factory=IngressStage)
    exploration: IngressStage = Field(default_factory=IngressStage)


class ServingConfig(BaseModel):
    """Everything the Serve application needs; unknown keys are refused so typos fail fast."""

    model_config = ConfigDict(extra="forbid")

    model_store_uri: str = Field("var/models", description="Model store root (path or fsspec URI)")
    retrieval_model: str = Field("two_tower", description="Model-store name of the retrieval model")
    ranking_model: str = Field("ranker", description="Model-store name of the ranking model")
    popularity_model: str = Field("popularity", description="Model-store name of the popularity baseline")
    item_knn_model: str = Field("item_knn", description="Model-store name of the item-kNN baseline")
    sequential_model: str = Field("sasrec", description="Model-store name of the SASRec sequential retriever")
    retrieval_version: str | None = Field(None, description="Version to serve; None/'latest'/'' = promoted")
    ranking_version: str | None = Field(None, description="Version to serve; None/'latest'/'' = promoted")
    num_shards: int = Field(2, ge=1, le=64, description="Retrieval shards (item index % num_shards)")
    shard_replicas: int = Field(1, ge=1, le=64, description="Replicas per retrieval shard deployment")
    shard_num_cpus: float = Field(0.25, ge=0.0, le=64, description="CPUs reserved per shard replica")
    ranker_replicas: int = Field(1, ge=1, le=64, description="Replicas of the ranker deployment")
    ranker_num_cpus: float = Field(0.25, ge=0.0, le=64)
    ingress_replicas: int = Field(1, ge=1, le=64, description="Replicas of the HTTP ingress deployment")
    ingress_num_cpus: float = Field(0.25, ge=0.0, le=64)
    ann: AnnKind = Field("auto", description="auto: flat <= flat_max_items < hnsw <= hnsw_max_items < ivfpq")
    flat_max_items: int = Field(50_000, ge=1, description="Largest shard served by exact IndexFlatIP in auto mode")
    hnsw_max_items: int = Field(300_000, ge=1, description="Largest shard served by HNSW in auto mode")
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_search: int = Field(128, ge=8, le=4096)
    ivf_nprobe: int = Field(128, ge=1, le=4096,
                            description="IVF lists probed per query; chosen from benchmarks/ann_served.py")
    ivf_nlist: int | None = Field(None, ge=16, le=1_000_000,
                                  description="IVF lists per shard; None = min(n/39, 4*sqrt(n))")
    retrieval_k: int = Field(200, ge=1, le=5000, description="ANN candidates per request (merged over shards)")
    knn_k: int = Field(100, ge=0, le=5000, description="Item-kNN candidates from recent history")
    popularity_k: int = Field(100, ge=0, le=5000, description="Popularity candidates")
    sequential_k: int = Field(100, ge=0, le=5000, description="SASRec candidates from the recent sequence")
    candidate_sources: dict[str, CandidateSourceConfig] = Field(
        default_factory=dict, description="Extra candidate sources by name (docs/serving.md, Extending serving)")
    seen_overfetch: int = Field(
        500, ge=0, le=5000,
        description="Extra candidates each source is asked for, up to the number of items the user has seen, so "
                    "that after the already-seen filter it still yields its k (the offline evaluator takes each "
                    "source's top-k among unseen items; docs/serving.md)")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Online feature store Redis")
    feature_repo_dir: Path | None = Field(None, description="Feast repo dir for recsys.features")
    feature_project: str = Field("recsys", description="Feast project of that repo (prefix of online keys)")
    feature_timeout_s: float = Field(0.2, gt=0, le=30, description="Budget for one feature round trip")
    online_state: OnlineStateConfig = Field(default_factory=OnlineStateConfig,
                                            description="Lifetimes of the real-time state in Redis (TTLs)")
    item_feature_cache_s: float = Field(
        60.0, ge=0, le=3600,
        description="Decoded online item features are cached in the ingress and re-read in the background once "
                    "older than this (0 = no cache: read every request); streamed item counters reach ranking "
                    "within about this long")
    item_feature_snapshot: bool = Field(
        True, description="Load every catalog item's online features into the ingress at start-up and keep re-reading "
                          "the whole catalog in the background, so requests never read item rows (the per-item "
                          "refresh above then applies only to items the snapshot does not hold yet)")
    item_feature_snapshot_wait_s: float = Field(
        300.0, ge=0, le=3600,
        description="How long replica start-up waits for the snapshot's first pass (4k items: well under 1 s; "
                    "1M items: ~40 s on a quiet 2-core box); past it the replica serves, reading items on demand")
    item_feature_refresh_items_per_s: float = Field(
        1000.0, gt=0, le=1_000_000,
        description="Pace of the snapshot's background full re-read (a safety net: items with real-time events "
                    "and new materializations are re-read within item_feature_version_poll_s); one pass takes "
                    "max(item_feature_cache_s, items / this) seconds (4k items: 60 s; 1M items: ~17 min at "
                    "~4 % of a core; reading costs ~37 us of CPU per item)")
    item_feature_version_poll_s: float = Field(
        5.0, gt=0, le=3600,
        description="How often the snapshot loop asks Redis which items had real-time events (and re-reads "
                    "them) and reads the materialization counter (when `recsys features materialize` has "
                    "bumped it, the whole catalog is re-read at once)")
    catalog_path: Path | None = Field(
        None, description="items.parquet (or a dataset dir holding it): genres, created_at, available"
    )
    experiments_config: Path | None = Field(None, description="Experiments YAML; None = no experiments")
    experiments_ledger_dir: Path | None = Field(
        None, description="Writable folder of the experiments' slot ledger (<stem>.slots.json); None = beside "
        "experiments_config. Serving refuses to start when the ledger must change and cannot be written here")
    exposure_log_dir: Path = Field(Path("var/logs/exposures"), description="Exposure/outcome JSONL directory "
                                   "(local development; unused when log_archive is set)")
    log_archive: LogArchiveConfig | None = Field(None, description="Exposures, outcomes and the event archive go "
                                                 "through the Redis stream into daily parquet at log_archive.uri "
                                                 "(recsys.platform.log_archiver); no shared volume")
    targeting_key: str | None = Field(
        None, description="HMAC key of signed targeting attributes (context.targeting); None = only stored features"
    )
    exploration_rate: float = Field(0.1, ge=0.0, le=1.0, description="Share of requests given an exploration slot")
    exploration_slot: int = Field(3, ge=0, le=1000, description="0-based position of the exploration item")
    new_item_days: float = Field(14.0, ge=0.0, description="Items created this recently (vs newest) count as new")
    exploration_seed: int | None = Field(None, description="Seed of the Thompson sampler (tests); None = random")
    exploration_max_rate: float = Field(0.2, ge=0.0, le=1.0,
                                        description="Cap on a variant's `exploration_rate` (exploration budget)")
    linucb: LinUCBConfig = Field(default_factory=LinUCBConfig,
                                 description="LinUCB slot (variant `exploration: linucb`)")
    content_k: int = Field(50, ge=0, le=5000, description="Content-based candidates from recent history (0 = off)")
    content_dim: int = Field(64, ge=2, le=512, description="Dimensions of the content (metadata) item vectors")
    catalog_poll_s: float = Field(1.0, ge=0.0, le=3600.0,
                                  description="Poll the Redis catalog feed for posted items every N s (0 = off)")
    cold_start_popularity_weight: float = Field(0.7, ge=0.0, le=1.0, description="Popularity share for cold users")
    reload_interval_s: float = Field(0.0, ge=0.0, description="Poll PROMOTED every N s (0 = only /admin/reload)")
    shard_timeout_s: float = Field(2.0, gt=0, le=60, description="Per-shard deadline before answering without it")
    ranker_timeout_s: float = Field(2.0, gt=0, le=60)
    ranker_endpoint: str | None = Field(
        None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Base URL of a KServe V2 ranker predictor (e.g. http://ranker-predictor.ns.svc); when set "
                    "the ranking stage calls it over HTTP and the in-graph Ranker deployment is not deployed")
    ranker_endpoint_model: str = Field("ranker", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$",
                                       description="Model name at ranker_endpoint (/v2/models/<name>/infer)")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig, description="Redis result cache, per-user invalidation")
    security: SecurityConfig = Field(default_factory=SecurityConfig, description="API keys for write endpoints")
    access_log: bool = Field(True, description="One JSON line per request on the recsys.serving.access logger")
    access_log_sample: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Share of successful, non-degraded requests logged (errors and degraded answers always are)")
    stage_yield: bool = Field(
        False, description="Yield to the event loop after each pipeline stage, so concurrent requests take each "
                           "stage together: -14% CPU per request at 16 concurrent in-process, -2-3% deployed, but "
                           "a burst's requests finish together (p99 +45% through HAProxy at c=32): off by default")
    stages: StagesConfig = Field(default_factory=StagesConfig, description="Where each pipeline stage runs")
    rerank: RerankDefaults = Field(default_factory=RerankDefaults)

    @field_validator("retrieval_version", "ranking_version", mode="before")
    @classmethod
    def _promoted_aliases(cls, v: object) -> object:
        """Helm renders "latest" (and empty strings) for "whatever is promoted"."""
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "latest", "promoted", "none")):
            return None
        return v

    @field_validator("candidate_sources")
    @classmethod
    def _source_names_free(cls, v: dict[str, CandidateSourceConfig]) -> dict[str, CandidateSourceConfig]:
        taken = sorted(set(v) & set(RESERVED_SOURCE_NAMES))
        if taken:
            raise ValueError(f"candidate source name(s) {taken} are taken by built-in sources")
        return v

    @field_validator("ranker_endpoint", mode="before")
    @classmethod
    def _empty_endpoint_is_none(cls, v: object) -> object:
        """Helm renders an unset endpoint as an empty string: the in-graph ranker."""
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("experiments_config", "experiments_ledger_dir", "feature_repo_dir", "catalog_path", mode="before")
    @classmethod
    def _empty_path_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @model_validator(mode="after")
    def _check_ann_bounds(self) -> ServingConfig:
        if self.hnsw_max_items < self.flat_max_items:
            raise ValueError("hnsw_max_items must be >= flat_max_items")
        if self.num_shards > 1 and self.stages.retrieval.placement == "local":
            raise ValueError("stages.retrieval.placement 'local' needs num_shards == 1 "
                             "(sharded retrieval always runs as shard deployments)")
        return self
