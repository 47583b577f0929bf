"""values.schema.json rejects bad values with helm's own, readable message; cross-field rules fail clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from recsys.platform.k8s.chart import HelmError


def _reject(render, tmp_path, values: dict) -> str:
    f = tmp_path / "bad-values.yaml"
    f.write_text(yaml.safe_dump(values))
    with pytest.raises(HelmError) as exc:
        render([f])
    return exc.value.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"serving": {"workers": {"replicas": -1}}}, ["/serving/workers/replicas", "minimum"]),
        ({"serving": {"replicaCount": 3}}, ["/serving", "additional properties 'replicaCount' not allowed"]),
        ({"redis": {"mode": "cluster"}}, ["/redis/mode", "must be one of 'internal', 'external'"]),
        ({"serving": {"application": {"numShards": 0}}}, ["/serving/application/numShards", "minimum"]),
        ({"serving": {"application": {"importPath": "not a path"}}}, ["/serving/application/importPath"]),
        ({"serving": {"deployments": {"Ranker": {"autoscaling": {"maxReplicas": "many"}}}}},
         ["/serving/deployments/Ranker/autoscaling/maxReplicas", "string"]),
        ({"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy"]),
        ({"modelStore": {"uri": "models"}}, ["/modelStore/uri"]),
        ({"training": {"schedule": {"cron": "every day"}}}, ["/training/schedule/cron"]),
        ({"serving": {"head": {"resources": {"limits": {"memory": "lots"}}}}},
         ["/serving/head/resources/limits/memory"]),
        ({"redis": {"mode": "external"}}, ["/redis/urlSecret/name"]),
        ({"training": {"datasetUri": "ftp://host/tables"}}, ["/training/datasetUri"]),
    ],
    ids=["negative-replicas", "unknown-key", "bad-enum", "zero-shards", "import-path", "string-for-int",
         "pull-policy", "model-store-uri", "cron", "quantity", "external-redis-without-secret",
         "dataset-uri-scheme"],
)
def test_schema_rejects_bad_values(render, tmp_path, values, expected):
    stderr = _reject(render, tmp_path, values)
    assert "values don't meet the specifications of the schema" in stderr
    for fragment in expected:
        assert fragment in stderr, stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"serving": {"workers": {"minReplicas": 5, "maxReplicas": 3}}},
         "serving.workers: minReplicas (5) must not exceed maxReplicas (3)"),
        ({"serving": {"deployments": {"Ranker": {"autoscaling": {"minReplicas": 9, "maxReplicas": 2}}}}},
         "serving.deployments.Ranker.autoscaling: minReplicas (9) must not exceed maxReplicas (2)"),
        ({"training": {"schedule": {"jobs": ["retrieval", "evaluation"]}}},
         'training.schedule.jobs: "evaluation" is not a key of training.jobs'),
    ],
    ids=["worker-bounds", "deployment-bounds", "unknown-scheduled-job"],
)
def test_cross_field_rules_fail_clearly(render, tmp_path, values, expected):
    assert expected in _reject(render, tmp_path, values)


def test_schema_covers_every_default_value(chart_paths):
    """Every key in values.yaml is declared in a closed object schema, and every required key has a default."""
    schema = json.loads((chart_paths.chart_dir / "values.schema.json").read_text())
    values = yaml.safe_load((chart_paths.chart_dir / "values.yaml").read_text())

    def walk(node: dict, sch: dict, path: str) -> None:
        while "$ref" in sch:
            sch = schema["$defs"][sch["$ref"].rsplit("/", 1)[1]]
        if "properties" not in sch:
            return
        assert sch.get("additionalProperties") is False, path
        assert set(node) <= set(sch["properties"]), path
        assert set(sch.get("required", [])) <= set(node), path
        for key, val in node.items():
            if isinstance(val, dict):
                walk(val, sch["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


def test_schema_is_generated_from_helm_tools(chart_paths, tmp_path):
    """values.schema.json is the output of helm/tools/values_schema.py (edit the generator, not the JSON)."""
    gen = chart_paths.repo_root / "helm" / "tools" / "values_schema.py"
    out = tmp_path / "schema.json"
    subprocess.run([sys.executable, str(gen), str(out)], check=True, timeout=60)
    committed = json.loads((chart_paths.chart_dir / "values.schema.json").read_text())
    assert json.loads(out.read_text()) == committed
