"""recsys.experiments: hashed A/B assignment, exposure/outcome logging and sequential tests.

Serving needs only `ExperimentRouter` (built from a YAML file; `assign`/`assign_primary` per request)
and `ExposureLog`. Names are imported lazily so that a serving replica does not pay for scipy/pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Assignment": "router",
    "ExperimentRouter": "router",
    "HOLDOUT_ASSIGNMENT": "router",
    "bucket": "router",
    "ConfigError": "config",
    "ExperimentsConfig": "config",
    "load_config": "config",
    "parse_config": "config",
    "ExposureLog": "exposure_log",
    "LogFrames": "exposure_log",
    "read_log": "exposure_log",
    "Decision": "sequential",
    "GroupSequentialTest": "sequential",
    "MsprtTest": "sequential",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"recsys.experiments.{module}"), name)
    globals()[name] = value
    return value
