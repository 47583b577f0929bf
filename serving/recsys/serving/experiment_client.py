"""Adapter between serving and ``recsys.experiments`` (assignment + exposure/outcome log).

With ``experiments_config`` unset, or the experiments package missing, every request is
"no experiment" and nothing is logged; otherwise the router picks the variant (and through it the
model versions and re-ranking overrides) and exposures/outcomes go to the JSON-lines log the
experiments component analyses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from recsys.serving.config import ServingConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantChoice:
    experiment: str | None = None
    variant: str | None = None
    layer: str | None = None
    retrieval_version: str | None = None
    ranking_version: str | None = None
    reranking: dict[str, Any] = field(default_factory=dict)
    is_holdout: bool = False


NO_EXPERIMENT = VariantChoice()


class ExperimentGateway:
    def __init__(self, cfg: ServingConfig):
        self.router: Any = None
        self.log: Any = None
        if cfg.experiments_config is None:
            return
        try:
            from recsys.experiments.exposure_log import ExposureLog
            from recsys.experiments.router import ExperimentRouter
        except ImportError as e:  # experiments component not installed: serve without experiments
            log.warning("experiments_config set but recsys.experiments unavailable: %s", e)
            return
        self.router = ExperimentRouter.from_file(cfg.experiments_config)
        self.log = ExposureLog(cfg.exposure_log_dir)

    @property
    def enabled(self) -> bool:
        return self.router is not None

    def assign(self, user_id: int, attributes: dict[str, Any] | None) -> VariantChoice:
        if self.router is None:
            return NO_EXPERIMENT
        self.router.maybe_reload(min_interval_s=5.0)
        a = self.router.assign_primary(str(user_id), attributes or None)
        if a is None:
            return NO_EXPERIMENT
        return VariantChoice(
            experiment=a.experiment,
            variant=a.variant,
            layer=a.layer,
            retrieval_version=a.retrieval_version,
            ranking_version=a.ranking_version,
            reranking=dict(a.reranking),
            is_holdout=a.is_holdout,
        )

    def log_exposure(self, user_id: int, choice: VariantChoice, request_id: str, items: list[int],
                     propensities: list[float] | None = None) -> None:
        if self.log is None or choice.experiment is None:
            return
        try:
            self.log.log_exposure(
                str(user_id), choice.experiment, choice.variant, request_id, time.time(), items,
                layer=choice.layer, is_holdout=choice.is_holdout, propensities=propensities,
            )
        except Exception as e:  # noqa: BLE001 - a full disk must not fail the recommendation itself
            log.warning("exposure log write failed: %s", e)

    def log_outcome(self, user_id: int, event_type: str, value: float, item_id: int | None) -> None:
        if self.log is None:
            return
        try:
            self.log.log_outcome(str(user_id), event_type, value, time.time(), item_id)
        except Exception as e:  # noqa: BLE001
            log.warning("outcome log write failed: %s", e)
