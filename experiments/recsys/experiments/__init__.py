"""recsys.experiments: hashed A/B assignment, exposure/outcome logging and sequential tests.

Serving needs only the first names below: build an `ExperimentRouter` (from a YAML file), call
`assign`/`assign_primary` per request, and log what was shown with an `ExposureLog`.
"""

from recsys.experiments.config import ConfigError, ExperimentsConfig, load_config, parse_config
from recsys.experiments.exposure_log import ExposureLog, LogFrames, read_log
from recsys.experiments.router import HOLDOUT_ASSIGNMENT, Assignment, ExperimentRouter, bucket
from recsys.experiments.sequential import Decision, GroupSequentialTest, MsprtTest

__all__ = [
    "HOLDOUT_ASSIGNMENT",
    "Assignment",
    "ConfigError",
    "Decision",
    "ExperimentRouter",
    "ExperimentsConfig",
    "ExposureLog",
    "GroupSequentialTest",
    "LogFrames",
    "MsprtTest",
    "bucket",
    "load_config",
    "parse_config",
    "read_log",
]
