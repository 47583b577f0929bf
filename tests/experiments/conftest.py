"""Fixtures for the experiments tests: small config factories (no Ray/Redis needed here)."""

from __future__ import annotations

from typing import Any

import pytest

from recsys.experiments.config import ExperimentsConfig, parse_config


def _ab(name: str, layer: str = "default", weights: tuple[float, float] = (50, 50), **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "layer": layer,
        "variants": [
            {"name": "control", "weight": weights[0]},
            {"name": "treatment", "weight": weights[1], "ranking_version": f"{name}-v2"},
        ],
        **extra,
    }


@pytest.fixture
def ab_experiment():
    """Factory for a two-variant experiment dict: ``ab_experiment("x", layer="l", weights=(10, 10))``."""
    return _ab


@pytest.fixture
def make_config():
    """Factory: ``make_config(experiments=[...], holdout={...}, ...)`` -> validated `ExperimentsConfig`."""

    def make(**raw: Any) -> ExperimentsConfig:
        return parse_config(raw, source="test.yaml")

    return make
