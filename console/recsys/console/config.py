"""Settings of the console: where it reads from and how the read key is configured.

One pydantic object built by ``recsys console`` (from the platform settings plus flags) and passed to
:func:`recsys.console.app.build_app`. The read key itself never sits in this object: like serving's
API key, the config names where keys live (an environment variable and/or a file, e.g. a mounted
Kubernetes Secret) and :func:`recsys.console.auth.load_read_keys` reads them once at start-up.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ConsoleConfig(BaseModel):
    """What the console shows and where each source lives; every source is optional."""

    model_config = ConfigDict(extra="forbid")

    model_store_uri: str = Field("var/models", description="Model store root (path or fsspec URI)")
    experiments_config: Path | None = Field(None, description="Experiments YAML; None = no experiments page data")
    plans_dir: Path | None = Field(
        None, description="Frozen analysis plans (read only); None = <config dir>/<config stem>.plans/ as the CLI")
    exposure_log_dir: Path = Field(Path("var/logs/exposures"), description="Exposure/outcome log directory")
    metrics_url: str | None = Field(
        "http://127.0.0.1:8000/metrics", description="Serving /metrics endpoint scraped for the serving page")
    redis_url: str | None = Field("redis://127.0.0.1:6379/0", description="Online store Redis (read-only use)")
    feature_repo_dir: Path = Field(Path("var/features"), description="Feature repo (offline build metadata)")
    feature_project: str = Field("recsys", description="Feast project: prefix of the online keys")
    read_key_env: str = Field("RECSYS_CONSOLE_READ_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                              description="Env var holding the read key(s), comma/newline separated")
    read_key_file: Path | None = Field(None, description="File holding the read key(s), e.g. a mounted Secret")
    insecure: bool = Field(False, description="Explicit opt-out: serve pages without a key (local use only)")
    refresh_s: int = Field(10, ge=2, le=3600, description="Serving page auto-refresh period")
    scrape_interval_s: float = Field(5.0, gt=0, le=600, description="How often /metrics is scraped")
    history_points: int = Field(180, ge=2, le=10_000, description="Scrapes kept for the serving plots")
    timeout_s: float = Field(2.0, gt=0, le=60, description="Timeout of every scrape and Redis call")
    cache_s: float = Field(5.0, ge=0, le=600, description="Experiment analyses are recomputed at most this often")
