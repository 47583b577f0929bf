"""helm lint + helm template for the default, production-like and all-features values, and offline
validation of every rendered object (core kinds: kubernetes-validate; custom resources: CRD schemas)."""

from __future__ import annotations

import copy

import pytest

from recsys.platform.k8s.chart import Rendered
from recsys.platform.k8s.validation import (
    DEFAULT_KUBERNETES_VERSION,
    crd_validator,
    is_custom_resource,
    ray_pod_templates,
    validate_object,
    validate_objects,
    validate_ray_pod_templates,
)

RENDERINGS = ["default_render", "production_render", "all_features_render"]


def test_kubernetes_version_is_bundled():
    import kubernetes_validate.utils as kv

    assert DEFAULT_KUBERNETES_VERSION in kv.all_versions()


def test_helm_lint_default(helm, chart_paths):
    assert "0 chart(s) failed" in helm(["lint", "--strict", str(chart_paths.chart_dir)])


def test_helm_lint_production(helm, chart_paths):
    out = helm(["lint", "--strict", str(chart_paths.chart_dir), "-f", str(chart_paths.production_values)])
    assert "0 chart(s) failed" in out


def test_helm_lint_all_features(helm, chart_paths, all_features):
    sets = [f"--set={k}={v}" for k, v in all_features.items()]
    assert "0 chart(s) failed" in helm(["lint", "--strict", str(chart_paths.chart_dir), *sets])


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_renders_expected_kinds(rendering, request):
    rendered: Rendered = request.getfixturevalue(rendering)
    kinds = {o["kind"] for o in rendered.objects}
    expected = {"RayService", "ConfigMap", "Deployment", "Service", "CronJob", "NetworkPolicy",
                "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceAccount", "Role", "RoleBinding"}
    assert expected <= kinds
    names = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert len(names) == len(set(names)), "duplicate object names"


def test_all_features_render_every_optional_object(all_features_render):
    kinds = {o["kind"] for o in all_features_render.objects}
    assert {"InferenceService", "Ingress", "RayJob", "StatefulSet", "Secret"} <= kinds
    assert all_features_render.get("ConfigMap", "recsys-grafana-dashboard")


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_core_objects_validate_against_kubernetes_schemas(rendering, request, chart_paths):
    rendered: Rendered = request.getfixturevalue(rendering)
    core = [o for o in rendered.objects if not is_custom_resource(o)]
    assert len(core) >= 10
    problems = validate_objects(core, chart_paths.crd_schema_dir)
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_custom_resources_validate_against_crd_schemas(rendering, request, chart_paths):
    rendered: Rendered = request.getfixturevalue(rendering)
    custom = [o for o in rendered.objects if is_custom_resource(o)]
    custom += list(rendered.training_job_manifests().values())  # RayJobs the schedule/CLI will create
    kinds = [o["kind"] for o in custom]
    assert kinds.count("RayService") == 1 and kinds.count("RayJob") >= 2
    if rendering != "default_render":
        assert "InferenceService" in kinds
    problems = validate_objects(custom, chart_paths.crd_schema_dir)
    assert not problems, "\n".join(map(str, problems[:20]))


def test_ray_pod_templates_are_checked(default_render):
    """Head, worker and submitter templates all go through Kubernetes' PodTemplate schema."""
    roles = {r for job in default_render.training_job_manifests().values() for r, _ in ray_pod_templates(job)}
    assert roles == {"head", "worker:cpu", "submitter"}
    broken = copy.deepcopy(default_render.get("RayService"))
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert validate_ray_pod_templates(broken)


def test_crd_strictness_catches_misspelt_field(default_render, chart_paths):
    """The strict CRD validation is not vacuous: a typo in a RayService field is reported."""
    rs = copy.deepcopy(default_render.get("RayService"))
    rs["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    problems = validate_object(rs, chart_paths.crd_schema_dir)
    assert any("enableInTreeAutoscalling" in p.message for p in problems)
    validator = crd_validator(chart_paths.crd_schema_dir, "ray.io/v1", "RayService")
    assert validator.is_valid(default_render.get("RayService"))


def test_security_defaults(default_render):
    """Every platform container runs non-root with a read-only root fs, a writable /tmp and limits."""
    pods = []
    for obj in [default_render.get("RayService"), *default_render.training_job_manifests().values()]:
        pods += [t["spec"] for _, t in ray_pod_templates(obj)]
    for kind in ("Deployment", "StatefulSet"):
        pods += [o["spec"]["template"]["spec"] for o in default_render.of_kind(kind)]
    pods += [o["spec"]["jobTemplate"]["spec"]["template"]["spec"] for o in default_render.of_kind("CronJob")]
    assert len(pods) >= 10
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), c["name"]
            assert c["resources"].get("limits"), c["name"]


def test_no_secret_material_in_defaults(default_render):
    """The only Secret in a default install is the in-chart Redis address (no password, no keys)."""
    secrets = default_render.of_kind("Secret")
    assert [s["metadata"]["name"] for s in secrets] == ["recsys-redis"]
    assert secrets[0]["stringData"] == {
        "redis-url": "redis://recsys-redis.recsys.svc:6379/0",
        "feast-connection-string": "recsys-redis.recsys.svc:6379",
    }


def test_probes_on_serving_workers_and_feast(default_render):
    rs = default_render.get("RayService")
    worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "serve"}
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "readinessProbe" not in head  # KubeRay's own probes; see values.yaml serving.probes
    feast = default_render.get("Deployment", "recsys-feast")["spec"]["template"]["spec"]["containers"][0]
    assert feast["readinessProbe"]["httpGet"]["path"] == "/health"


def test_liveness_probe_opt_in(all_features_render):
    rs = all_features_render.get("RayService")
    worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "serve"}


def _redis_args(rendered) -> list[str]:
    sts = rendered.get("StatefulSet", "recsys-redis")
    return sts["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("limit,expected", [("1Gi", str(1073741824 * 75 // 100)), ("4G", str(4 * 10**9 * 75 // 100))])
def test_redis_maxmemory_is_derived_below_the_container_limit(render, limit, expected):
    """A full Redis must refuse writes (noeviction -> 503 + Retry-After), not be OOM-killed at the limit."""
    args = _redis_args(render(set_values={"redis.internal.resources.limits.memory": limit}))
    assert args[args.index("--maxmemory") + 1] == expected
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"


def test_redis_maxmemory_explicit_value_and_unparseable_limit(render):
    from recsys.platform.k8s.chart import HelmError

    args = _redis_args(render(set_values={"redis.internal.maxMemory": "300mb"}))
    assert args[args.index("--maxmemory") + 1] == "300mb"
    with pytest.raises(HelmError, match="cannot derive maxmemory"):
        render(set_values={"redis.internal.resources.limits.memory": "1.5Gi"})


def test_redis_cluster_option_needs_an_external_cluster_and_feast_redis_cluster(render):
    from recsys.platform.k8s.chart import HelmError

    with pytest.raises(HelmError, match="needs redis.mode=external"):
        render(set_values={"redis.cluster": "true"})
    external = {"redis.cluster": "true", "redis.mode": "external", "redis.urlSecret.name": "my-cluster"}
    with pytest.raises(HelmError, match="redis_type: redis_cluster"):
        render(set_values=external)
    yaml_text = ("project: recsys\nprovider: local\nregistry: s3://b/registry.db\nonline_store:\n  type: redis\n"
                 "  redis_type: redis_cluster\n  connection_string: ${REDIS_CONNECTION_STRING}\n")
    rendered = render(set_values=external, set_json={"features.feast.featureStoreYaml": yaml_text})
    assert "redis_cluster" in rendered.get("ConfigMap", "recsys-feast")["data"]["feature_store.yaml"]
    assert not [s for s in rendered.of_kind("StatefulSet") if s["metadata"]["name"] == "recsys-redis"]
