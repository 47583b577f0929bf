"""serving.rollout: model versions from Helm values, as one Serve `user_config` on every deployment.

A Serve config's `user_config` replaces the one the app's code sets, and Serve delivers it to every replica's
`reconfigure` in place (docs/rollout.md). So the chart must render, on every deployment the app builds, the
same document, one that parses as recsys.serving.models.rollout.RolloutSpec, and by default the one build_app would
have chosen itself (promoted versions + the experiment variants' versions preloaded).
"""

from __future__ import annotations

import pytest
import yaml

from recsys.platform.k8s.chart import HelmError
from recsys.serving.app import parse_args, rollout_spec
from recsys.serving.models.rollout import RolloutSpec, VariantVersions

EXPERIMENTS = {
    "version": 1,
    "experiments": [{
        "name": "two-tower-v6",
        "variants": [
            {"name": "control", "weight": 50, "lane": 50},
            {"name": "treatment", "weight": 40, "lane": 40, "retrieval_version": "v6"},
            {"name": "both", "weight": 10, "lane": 10, "retrieval_version": "v6", "ranking_version": "r3"},
        ],
    }],
}


def _app(rendered) -> dict:
    (app,) = rendered.serve_config()["applications"]
    return app


def _user_configs(rendered) -> dict[str, dict]:
    return {d["name"]: d["user_config"] for d in _app(rendered)["deployments"]}


def _the_spec(rendered) -> RolloutSpec:
    """The one user_config of the app: present on every deployment, identical, a valid RolloutSpec."""
    configs = _user_configs(rendered)
    first = next(iter(configs.values()))
    assert all(c == first for c in configs.values()), configs
    return RolloutSpec.model_validate(first)  # extra="forbid": a misspelt key fails here


def _values_file(tmp_path, values: dict):
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    return f


def test_every_deployment_gets_the_same_rollout_spec(default_render, production_render):
    from ray.serve.schema import ServeDeploySchema

    for rendered, shards in ((default_render, 2), (production_render, 8)):
        names = set(_user_configs(rendered))
        assert names == {"Ingress", "Ranker", *(f"RetrievalShard{i}" for i in range(shards))}
        ServeDeploySchema.parse_obj(rendered.serve_config())  # what KubeRay hands to Serve accepts it
    assert _the_spec(default_render) == RolloutSpec()  # promoted versions, nothing preloaded
    # values-production.yaml pins serving.application.*Version and runs a ranker experiment
    assert _the_spec(production_render) == RolloutSpec(
        retrieval_version="v20261120-030000-000000", ranking_version="v20261120-034000-000000",
        preload=[VariantVersions(ranking_version="v20261113-034000-000000"),
                 VariantVersions(ranking_version="v20261120-034000-000000")])


def test_default_matches_what_build_app_would_choose(render, tmp_path):
    """With no serving.rollout set, the rendered user_config equals build_app's own rollout_spec for the
    rendered args and the rendered experiments file, so rendering it loses nothing (variant preloads)."""
    rendered = render([_values_file(tmp_path, {"experiments": {"config": EXPERIMENTS},
                                               "serving": {"application": {"rankingVersion": "r2"}}})])
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(rendered.get("ConfigMap", "recsys-experiments")["data"]["experiments.yaml"])
    args = {**_app(rendered)["args"], "experiments_config": str(experiments)}
    expected = rollout_spec(parse_args(args))
    assert _the_spec(rendered) == expected
    assert expected.ranking_version == "r2" and expected.retrieval_version is None
    assert expected.preload == [VariantVersions(retrieval_version="v6"),
                                VariantVersions(retrieval_version="v6", ranking_version="r3")]


def test_rollout_values_render_into_user_config(render, tmp_path):
    rendered = render([_values_file(tmp_path, {
        "experiments": {"config": EXPERIMENTS},
        "serving": {"application": {"retrievalVersion": "v1", "rankingVersion": "r1"}, "rollout": {
            "retrievalVersion": "v7",
            "rankingVersion": "latest",  # = promoted, not a version called "latest"
            "preload": [{"retrievalVersion": "v5", "rankingVersion": "r5"}, {"rankingVersion": "r4"},
                        {"retrievalVersion": "v6"},  # also an experiment variant's: kept once
                        {"retrievalVersion": "latest"}],  # nothing to preload
            "generation": 3,
            "settleTimeoutSeconds": 42.5,
        }},
    })])
    spec = _the_spec(rendered)
    assert (spec.retrieval_version, spec.ranking_version) == ("v7", None)
    assert (spec.generation, spec.settle_timeout_s) == (3, 42.5)
    assert spec.preload == [VariantVersions(ranking_version="r4"),
                            VariantVersions(retrieval_version="v5", ranking_version="r5"),
                            VariantVersions(retrieval_version="v6"),
                            VariantVersions(retrieval_version="v6", ranking_version="r3")]
    assert spec.retrieval_versions() == ["v7", "v5", "v6"]
    # the builder args still carry serving.application.*; the rollout only lives in user_config
    assert _app(rendered)["args"]["retrieval_version"] == "v1"


def test_a_rollout_changes_nothing_but_user_config(render):
    """Only user_config differs, so Serve updates the replicas in place (no rebuild, no restart) and KubeRay
    keeps the Ray cluster (its spec is unchanged: no new cluster for upgradeStrategy NewCluster)."""
    before = render()
    after = render(set_values={"serving.rollout.retrievalVersion": "v7", "serving.rollout.rankingVersion": "r7"})
    strip = [{k: v for k, v in d.items() if k != "user_config"} for d in _app(after)["deployments"]]
    assert strip == [{k: v for k, v in d.items() if k != "user_config"} for d in _app(before)["deployments"]]
    assert {k: v for k, v in _app(after).items() if k != "deployments"} == {
        k: v for k, v in _app(before).items() if k != "deployments"}
    assert after.get("RayService")["spec"]["rayClusterConfig"] == before.get("RayService")["spec"]["rayClusterConfig"]
    spec = _the_spec(after)
    assert (spec.retrieval_version, spec.ranking_version) == ("v7", "r7")


def test_generation_alone_changes_the_user_config(render, default_render):
    """After promoting a new version with versions left at promoted, bumping generation is the change Serve
    needs to see to make every replica re-resolve "promoted"."""
    bumped = render(set_values={"serving.rollout.generation": "1"})
    assert _the_spec(bumped) == RolloutSpec(generation=1)
    assert _the_spec(bumped) != _the_spec(default_render)


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        ({"retrievalVersion": "V7 final"}, ["/serving/rollout/retrievalVersion", "does not match pattern"]),
        ({"rankingVersion": 7}, ["/serving/rollout/rankingVersion"]),
        ({"preload": [{"retrieval_version": "v6"}]}, ["/serving/rollout/preload/0",
                                                      "additional properties 'retrieval_version' not allowed"]),
        ({"preload": [{}]}, ["/serving/rollout/preload/0", "minProperties"]),
        ({"preload": {"retrievalVersion": "v6"}}, ["/serving/rollout/preload", "want array"]),
        ({"generation": -1}, ["/serving/rollout/generation", "minimum"]),
        ({"settleTimeoutSeconds": 0}, ["/serving/rollout/settleTimeoutSeconds"]),
        ({"version": "v7"}, ["/serving/rollout", "additional properties 'version' not allowed"]),
    ],
    ids=["bad-version-id", "number-for-version", "snake-case-preload", "empty-preload-item", "preload-not-a-list",
         "negative-generation", "zero-settle-timeout", "unknown-key"],
)
def test_schema_rejects_bad_rollout_values(render, tmp_path, rollout, expected):
    with pytest.raises(HelmError) as exc:
        render([_values_file(tmp_path, {"serving": {"rollout": rollout}})])
    assert "values don't meet the specifications of the schema" in exc.value.stderr
    for fragment in expected:
        assert fragment in exc.value.stderr, exc.value.stderr
