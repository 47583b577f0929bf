"""Platform-wide settings: where data, models, features and logs live.

One pydantic object, loaded once by the CLI (or by a Serve/Ray Train entry point) from an
optional YAML file and ``RECSYS_*`` environment variables, then passed down explicitly.  No
module reads the environment on import, so tests and multiple stores in one process never
fight over globals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "RECSYS_"


class ConfigError(ValueError):
    """A settings file or variable is invalid; the message names the field."""


class PlatformConfig(BaseModel):
    """Shared locations and defaults; every component config can embed or derive from it."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(Path("var/data"), description="Generated/loaded dataset (parquet) directory")
    model_store_uri: str = Field("var/models", description="Model store root: a path or fsspec URI (s3://...)")
    feature_repo_dir: Path = Field(Path("var/features"), description="Feast repo + offline parquet directory")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Online feature store / cache Redis")
    log_dir: Path = Field(Path("var/logs"), description="Event, exposure and outcome logs")
    seed: int = Field(42, description="Global seed for data generation and training")


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> PlatformConfig:
    """YAML file (if given) overlaid by ``RECSYS_<FIELD>`` variables from ``env`` (default ``os.environ``)."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        values.update(loaded)
    env = os.environ if env is None else env
    for name in PlatformConfig.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    try:
        return PlatformConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid setting '{field}': {first['msg']}") from e
