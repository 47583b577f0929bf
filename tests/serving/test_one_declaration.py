"""One declaration per re-ranking knob: the request's ``diversity`` overrides come from ``RerankDefaults``."""

from __future__ import annotations

_BOUND_KEYS = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def test_request_diversity_knobs_derive_from_the_rerank_declaration():
    from recsys.experiments.variant_params import RerankDefaults
    from recsys.serving.http.schemas import REQUEST_RERANK_KNOBS, DiversityOverrides

    req = DiversityOverrides.model_json_schema()
    declared = RerankDefaults.model_json_schema()["properties"]
    assert req["additionalProperties"] is False
    # the request fields the API has always published, in order, each optional (unset = variant/server value)
    assert list(req["properties"]) == ["mmr_lambda", "max_per_genre", "genre_window", "freshness_weight",
                                       "exploration"]
    for name in REQUEST_RERANK_KNOBS:
        field = req["properties"][name]
        value, none = field["anyOf"]
        assert none == {"type": "null"} and field["default"] is None
        assert value == {k: v for k, v in declared[name].items() if k in _BOUND_KEYS}, name
        assert field["description"] == declared[name]["description"], name
    assert req["properties"]["max_per_genre"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert req["properties"]["mmr_lambda"]["anyOf"][0] == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert req["properties"]["exploration"]["anyOf"][0] == {"type": "boolean"}


def test_request_knobs_keep_their_strict_json_types():
    import pytest
    from pydantic import ValidationError

    from recsys.serving.http.schemas import DiversityOverrides

    ok = DiversityOverrides.model_validate({"max_per_genre": 2.0, "mmr_lambda": 1, "genre_window": 5})
    assert (ok.max_per_genre, ok.mmr_lambda, ok.genre_window) == (2, 1.0, 5)
    for bad in ({"max_per_genre": True}, {"max_per_genre": "5"}, {"genre_window": 0}, {"mmr_lambda": 1.5},
                {"freshness_weight": -0.1}, {"exploration": 1}, {"freshness_half_life_days": 3.0}):
        with pytest.raises(ValidationError):
            DiversityOverrides.model_validate(bad)
