"""`helm install` / `helm upgrade` of the chart on a real API server (Kubernetes 1.20), objects read back.

What the server adds over the offline render tests in tests/helm: admission and validation of every built-in
object (immutable fields, label syntax, name lengths, selector/label agreement), the KubeRay/KServe CRD schemas
enforced on the custom objects, defaulting, server-side apply field ownership, and apiVersions chosen from the
server's capabilities (batch/v1beta1 CronJob, policy/v1beta1 PDB, autoscaling/v2beta2 HPA on 1.20).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from recsys.platform.k8s.testenv import CommandError, KubeEnv, Objects

# one API server per session; its first use may build it (~10 min) when no prebuilt binary is cached
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]


def _values(kube: KubeEnv) -> dict[str, Any]:
    return yaml.safe_load((kube.chart.chart_dir / "values.yaml").read_text())


def _pod_templates(objs: Objects) -> dict[str, dict[str, Any]]:
    """Every pod template the release defines (built-in workloads, RayService, training RayJob templates)."""
    pods: dict[str, dict[str, Any]] = {}
    for kind in ("Deployment", "StatefulSet"):
        for o in objs.of_kind(kind):
            pods[f"{kind}/{o['metadata']['name']}"] = o["spec"]["template"]
    for o in objs.of_kind("CronJob"):
        pods[f"CronJob/{o['metadata']['name']}"] = o["spec"]["jobTemplate"]["spec"]["template"]
    clusters = {f"RayService/{o['metadata']['name']}": o["spec"]["rayClusterConfig"]
                for o in objs.of_kind("RayService")}
    for name, job in objs.training_jobs().items():
        clusters[f"RayJob/{name}"] = job["spec"]["rayClusterSpec"]
        pods[f"RayJob/{name}/submitter"] = job["spec"]["submitterPodTemplate"]
    for o in objs.of_kind("RayJob"):
        clusters[f"RayJob/{o['metadata']['name']}"] = o["spec"]["rayClusterSpec"]
    for key, cluster in clusters.items():
        # KubeRay adds ray.io/node-type to the pods it creates from these templates
        head = cluster["headGroupSpec"]["template"]
        labels = {**head["metadata"]["labels"], "ray.io/node-type": "head"}
        pods[f"{key}/head"] = {**head, "metadata": {"labels": labels}}
        for group in cluster["workerGroupSpecs"]:
            t = group["template"]
            labels = {**t["metadata"]["labels"], "ray.io/node-type": "worker"}
            pods[f"{key}/{group['groupName']}"] = {**t, "metadata": {"labels": labels}}
    return pods


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _entrypoint_flags(entrypoint: str) -> dict[str, str | bool]:
    words = shlex.split(entrypoint)
    flags: dict[str, str | bool] = {}
    for i, w in enumerate(words):
        if w.startswith("--"):
            nxt = words[i + 1] if i + 1 < len(words) else None
            flags[w] = nxt if nxt is not None and not nxt.startswith("--") else True
    return flags


def _assert_serve_maximum_fits_the_worker_group(objs: Objects) -> None:
    """The CPUs Serve asks for at every deployment's max_replicas fit into the worker group at maxReplicas,
    so the Ray autoscaler can always place what Serve autoscaling wants (docs/helm.md, Autoscaling)."""
    deps = objs.serve_config()["applications"][0]["deployments"]
    want = sum(d["autoscaling_config"]["max_replicas"] * d["ray_actor_options"]["num_cpus"] for d in deps)
    (workers,) = objs.get("RayService", "recsys")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    cpus = float(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert want <= workers["maxReplicas"] * cpus, (want, workers["maxReplicas"], cpus)


def test_api_versions_follow_the_server_capabilities(kube, default_release):
    ns, _ = default_release
    manifest = [d for d in yaml.safe_load_all(kube.helm("get", "manifest", "recsys", "-n", ns).stdout) if d]
    versions = {d["kind"]: d["apiVersion"] for d in manifest}
    assert versions["CronJob"] == "batch/v1beta1"  # 1.20 serves no batch/v1 CronJob
    assert versions["PodDisruptionBudget"] == "policy/v1beta1"
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2beta2"
    assert versions["RayService"] == "ray.io/v1"
    server = kube.kubectl("version", "-o", "json", check=False).stdout
    assert '"gitVersion": "v1.20.2"' in server


def test_serve_config_parses_and_names_the_apps_deployments(default_release, tmp_path):
    from ray.serve._private.build_app import build_app as build_serve_app
    from ray.serve.schema import ServeDeploySchema

    from recsys.serving.app import build_app

    _, objs = default_release
    config = objs.serve_config()
    ServeDeploySchema.parse_obj(config)  # the document KubeRay hands to Serve's REST API
    (app,) = config["applications"]
    assert app["import_path"] == "recsys.serving.app:build_app"
    named = {d["name"] for d in app["deployments"]}
    # build_app reads the experiments file (variant versions to preload): the one the ConfigMap mounts
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(objs.get("ConfigMap", "recsys-experiments")["data"]["experiments.yaml"])
    args = {**app["args"], "experiments_config": str(experiments)}
    built = build_serve_app(build_app(args), name=app["name"])  # the app's own graph, from these args
    assert named == {d.name for d in built.deployments} == {"Ingress", "RetrievalShard0", "RetrievalShard1", "Ranker"}
    # the user_config the chart sets on each deployment is the one the app's code would have set itself
    rendered = {d["name"]: d["user_config"] for d in app["deployments"]}
    assert rendered == {d.name: d.user_config for d in built.deployments}
    # write endpoints closed by default: the app reads security.insecure=false from the stored config
    assert app["args"]["security"] == {"insecure": False}


def test_serve_autoscaling_and_ray_autoscaler_render_from_values(kube, default_release):
    _, objs = default_release
    values = _values(kube)
    deps = {d["name"]: d for d in objs.serve_config()["applications"][0]["deployments"]}
    for name, dep in deps.items():
        want = values["serving"]["deployments"][re.sub(r"\d+$", "", name)]
        assert dep["num_replicas"] == "auto"
        assert dep["autoscaling_config"] == {
            "min_replicas": want["autoscaling"]["minReplicas"], "max_replicas": want["autoscaling"]["maxReplicas"],
            "target_ongoing_requests": want["autoscaling"]["targetOngoingRequests"]}
        assert dep["max_ongoing_requests"] == want["maxOngoingRequests"]
    cluster = objs.get("RayService", "recsys")["spec"]["rayClusterConfig"]
    scaler = values["serving"]["autoscaler"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == scaler["idleTimeoutSeconds"]
    assert cluster["autoscalerOptions"]["upscalingMode"] == scaler["upscalingMode"]
    (workers,) = cluster["workerGroupSpecs"]
    w = values["serving"]["workers"]
    assert (workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == (
        w["replicas"], w["minReplicas"], w["maxReplicas"])
    _assert_serve_maximum_fits_the_worker_group(objs)
    hpa = objs.get("HorizontalPodAutoscaler", "recsys-feast")
    feast = values["features"]["feast"]["server"]["autoscaling"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (feast["minReplicas"], feast["maxReplicas"])
    target = hpa["spec"]["metrics"][0]["resource"]["target"]
    assert target["averageUtilization"] == feast["targetCPUUtilizationPercentage"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == objs.get("Deployment", "recsys-feast")["metadata"]["name"]


def test_rayjob_entrypoints_carry_the_scale_out_flags(kube, default_release):
    _, objs = default_release
    values = _values(kube)
    jobs = objs.training_jobs()
    assert set(jobs) == {"retrieval", "ranking"}
    for name, job in jobs.items():
        flags = _entrypoint_flags(job["spec"]["entrypoint"])
        (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        pod_cpus = float(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
        assert int(flags["--num-workers"]) == values["training"]["jobs"][name]["workers"]["replicas"]
        assert float(flags["--cpus-per-worker"]) == pod_cpus  # one Ray Train worker per pod
        assert int(flags["--num-workers"]) <= group["maxReplicas"]
        assert flags["--storage-path"] == values["training"]["storagePath"]
        assert flags["--dataset-uri"] == values["training"]["datasetUri"]  # the tables the worker pods stream
        assert "--use-gpu" not in flags
        assert job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True


def test_probes_and_security_context(default_release):
    _, objs = default_release
    pods = _pod_templates(objs)
    assert len(pods) >= 10
    for key, pod in pods.items():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, key
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, key
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, (key, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (key, c["name"])
    worker = pods["RayService/recsys/cpu"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    probe = worker["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz" and probe["httpGet"]["port"] in ports
    assert "livenessProbe" not in worker  # off by default (KubeRay injects its own)
    feast = pods["Deployment/recsys-feast"]["spec"]["containers"][0]
    for kind in ("readinessProbe", "livenessProbe"):
        assert feast[kind]["httpGet"]["path"] == "/health"
        assert feast[kind]["httpGet"]["port"] in {p["name"] for p in feast["ports"]}
        assert feast[kind]["timeoutSeconds"] == 1 and feast[kind]["successThreshold"] == 1  # server defaults
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and "RAY_SERVE_ENABLE_HA_PROXY" not in env


def test_selectors_match_the_pods_they_are_meant_for(default_release):
    _, objs = default_release
    pods = _pod_templates(objs)

    def selected(selector: dict[str, str]) -> set[str]:
        return {k for k, p in pods.items() if _matches(selector, p["metadata"]["labels"])}

    policies = {o["metadata"]["name"]: o["spec"]["podSelector"]["matchLabels"] for o in objs.of_kind("NetworkPolicy")}
    assert selected(policies["recsys-internal"]) == set(pods)  # every pod of the release
    serving = {k for k in pods if k.startswith("RayService/")}
    assert selected(policies["recsys-serving-http"]) == serving
    heads = {k for k in pods if k.endswith("/head")}
    assert selected(policies["recsys-kuberay-operator"]) == heads and len(heads) == 3
    (peer,) = objs.get("NetworkPolicy", "recsys-internal")["spec"]["ingress"][0]["from"]
    assert selected(peer["podSelector"]["matchLabels"]) == set(pods)
    pdb = objs.get("PodDisruptionBudget", "recsys-serving-workers")
    assert selected(pdb["spec"]["selector"]["matchLabels"]) == {"RayService/recsys/cpu"}
    assert selected(objs.get("PodDisruptionBudget", "recsys-feast")["spec"]["selector"]["matchLabels"]) == {
        "Deployment/recsys-feast"}
    for svc in ("recsys-feast", "recsys-redis"):
        selector = objs.get("Service", svc)["spec"]["selector"]
        assert len(selected(selector)) == 1, svc
    # the Service KubeRay will create for Serve (serveService) exposes the Serve port the workers listen on
    serve_svc = objs.get("RayService", "recsys")["spec"]["serveService"]
    worker_ports = {p["containerPort"] for p in pods["RayService/recsys/cpu"]["spec"]["containers"][0]["ports"]}
    assert {p["port"] for p in serve_svc["spec"]["ports"]} <= worker_ports


def test_production_values_install(production_release):
    _, objs = production_release
    deps = {d["name"] for d in objs.serve_config()["applications"][0]["deployments"]}
    assert {f"RetrievalShard{i}" for i in range(8)} <= deps
    _assert_serve_maximum_fits_the_worker_group(objs)
    jobs = objs.training_jobs()
    ranking = _entrypoint_flags(jobs["ranking"]["spec"]["entrypoint"])
    assert ranking["--use-gpu"] is True and ranking["--num-workers"] == "2" and ranking["--epochs"] == "10"
    assert ranking["--storage-path"] == "s3://prod-recsys-models/ray-results"
    assert ranking["--dataset-uri"] == "s3://prod-recsys-models/training-datasets"
    (gpu_group,) = jobs["ranking"]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert gpu_group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    isvc = objs.get("InferenceService", "recsys-ranker")
    assert isvc["spec"]["predictor"]["minReplicas"] == 2
    ingress = objs.get("Ingress", "recsys-serving")
    assert ingress["spec"]["tls"][0]["secretName"] == "recs-example-com-tls"
    worker = objs.get("RayService", "recsys")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    env = {e["name"]: e for e in worker["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "recsys-redis", "key": "redis-url"}
    assert env["RECSYS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "recsys-api-key"
    assert not objs.of_kind("StatefulSet")  # external Redis
    schedule = objs.get("CronJob", "recsys-training-schedule")
    assert schedule["spec"]["schedule"] == "0 2 * * *"  # 1.20 has no spec.timeZone: the zone is annotated
    assert schedule["metadata"]["annotations"]["recsys.io/schedule-time-zone"].startswith("Europe/Berlin (not applied")


def test_upgrade_with_changed_values(kube):
    ns = kube.new_namespace("upgrade")
    kube.install(ns)
    before = kube.get_objects(ns)
    generation = before.get("RayService", "recsys")["metadata"]["generation"]
    kube.install(ns, upgrade=True, set_values={
        "serving.application.numShards": "3",
        "serving.deployments.Ranker.autoscaling.maxReplicas": "10",
        "serving.autoscaler.idleTimeoutSeconds": "120",
        "serving.autoscaler.upscalingMode": "Aggressive",
        "serving.workers.maxReplicas": "12",
        "serving.throughputOptimized": "false",
        "serving.haproxyIngress": "true",
        "training.jobs.retrieval.workers.replicas": "3",
        "training.runOnInstall": "true",
        "features.feast.server.autoscaling.maxReplicas": "9",
        "kserve.enabled": "true",
    }, set_json={"serving.deployments.Ranker.autoscaling.targetOngoingRequests": 2.5})
    after = kube.get_objects(ns)
    rs = after.get("RayService", "recsys")
    assert rs["metadata"]["generation"] == generation + 1
    deps = {d["name"]: d for d in after.serve_config()["applications"][0]["deployments"]}
    assert {n for n in deps if n.startswith("RetrievalShard")} == {"RetrievalShard0", "RetrievalShard1",
                                                                   "RetrievalShard2"}
    assert deps["Ranker"]["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 10,
                                                    "target_ongoing_requests": 2.5}
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["autoscalerOptions"] == {**cluster["autoscalerOptions"], "idleTimeoutSeconds": 120,
                                            "upscalingMode": "Aggressive"}
    assert cluster["workerGroupSpecs"][0]["maxReplicas"] == 12
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in env
    assert after.get("HorizontalPodAutoscaler", "recsys-feast")["spec"]["maxReplicas"] == 9
    assert _entrypoint_flags(after.training_jobs()["retrieval"]["spec"]["entrypoint"])["--num-workers"] == "3"
    # runOnInstall: the RayJobs themselves were admitted against KubeRay's CRD schema
    live = {o["metadata"]["name"]: o for o in after.of_kind("RayJob")}
    assert set(live) == {"recsys-train-retrieval", "recsys-train-ranking"}
    assert _entrypoint_flags(live["recsys-train-retrieval"]["spec"]["entrypoint"])["--num-workers"] == "3"
    assert after.of_kind("InferenceService")
    history = kube.helm("history", "recsys", "-n", ns, "-o", "json").stdout
    assert [h["status"] for h in yaml.safe_load(history)] == ["superseded", "deployed"]


def test_rollout_by_helm_upgrade_changes_only_user_config(kube):
    """docs/rollout.md's Kubernetes rollout: `helm upgrade --reuse-values --set serving.rollout...` changes the
    stored serveConfigV2 in nothing but the user_config of every deployment (Serve reconfigures replicas in
    place) and leaves rayClusterConfig alone (KubeRay keeps the cluster)."""
    from recsys.serving.models.rollout import RolloutSpec

    ns = kube.new_namespace("rollout")
    installed = kube.install(ns)
    assert "write endpoints" in installed.stdout and "answer 401" in installed.stdout  # NOTES: no API key
    before = kube.get_objects(ns)
    upgraded = kube.helm("upgrade", "recsys", str(kube.chart.chart_dir), "-n", ns, "--reuse-values",
                         "--set", "serving.rollout.retrievalVersion=v7", "--set", "serving.rollout.generation=1")
    assert "Models: retrieval v7, ranking promoted." in upgraded.stdout
    after = kube.get_objects(ns)

    def split(objs: Objects) -> tuple[dict[str, RolloutSpec], list[dict[str, Any]], dict[str, Any]]:
        (app,) = objs.serve_config()["applications"]
        specs = {d["name"]: RolloutSpec.model_validate(d["user_config"]) for d in app["deployments"]}
        rest = [{k: v for k, v in d.items() if k != "user_config"} for d in app["deployments"]]
        return specs, rest, {k: v for k, v in app.items() if k != "deployments"}

    specs0, rest0, app0 = split(before)
    specs1, rest1, app1 = split(after)
    assert set(specs1) == {"Ingress", "Ranker", "RetrievalShard0", "RetrievalShard1"}
    assert all(spec == RolloutSpec() for spec in specs0.values())
    assert all(spec == RolloutSpec(retrieval_version="v7", generation=1) for spec in specs1.values())
    assert (rest1, app1) == (rest0, app0)
    rs0, rs1 = before.get("RayService", "recsys"), after.get("RayService", "recsys")
    assert rs1["spec"]["rayClusterConfig"] == rs0["spec"]["rayClusterConfig"]
    assert rs1["metadata"]["generation"] == rs0["metadata"]["generation"] + 1


@pytest.mark.parametrize(
    ("set_values", "set_json", "expected"),
    [
        ({}, {"serving.workers.replicas": -1}, ["values don't meet the specifications of the schema",
                                                "/serving/workers/replicas"]),
        ({"serving.replicaCount": "3"}, {}, ["additional properties 'replicaCount' not allowed"]),
        ({"training.storagePath": "s3:/bucket"}, {}, ["/training/storagePath", "does not match pattern"]),
        ({}, {"training.jobs.retrieval.workers.numWorkers": 9},
         ["training.jobs.retrieval.workers: 9 Ray Train workers (numWorkers) do not fit into maxReplicas=4"]),
    ],
    ids=["schema-minimum", "schema-unknown-key", "schema-storage-uri", "workers-do-not-fit"],
)
def test_bad_values_fail_at_install(kube, set_values, set_json, expected):
    ns = kube.new_namespace("bad")
    with pytest.raises(CommandError) as err:
        kube.install(ns, set_values=set_values, set_json=set_json)
    for fragment in expected:
        assert fragment in err.value.stderr, err.value.stderr
    assert kube.helm("list", "-n", ns, "-q").stdout.strip() == ""  # refused before any object was sent
    assert kube.kubectl("get", "rayservices,configmaps", "-n", ns, "-o", "name").stdout.strip() == ""


def test_what_only_the_server_rejects(kube):
    """A label key with a space passes values.schema.json (labels are free-form strings) but not the server."""
    ns = kube.new_namespace("server-rejects")
    with pytest.raises(CommandError) as err:
        kube.install(ns, set_json={"commonLabels": {"team name": "recs"}})
    assert "team name" in err.value.stderr and "Invalid value" in err.value.stderr
