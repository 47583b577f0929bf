"""Values really flow into the rendered objects: change a knob, see the object change."""

from __future__ import annotations

import pytest
import yaml

from recsys.platform.k8s.chart import HelmError


def _ray_cluster(rendered):
    return rendered.get("RayService")["spec"]["rayClusterConfig"]


def _deployments(rendered):
    return {d["name"]: d for d in rendered.serve_config()["applications"][0]["deployments"]}


def _env(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_default_serve_config(default_render):
    cfg = default_render.serve_config()
    (app,) = cfg["applications"]
    assert app["import_path"] == "recsys.serving.app:build_app"
    assert app["args"] == {
        "model_store_uri": "s3://recsys-models/store",
        "retrieval_version": "latest",
        "ranking_version": "latest",
        "num_shards": 2,
        "experiments_config": "/etc/recsys/experiments/experiments.yaml",
        "exposure_log_dir": "/tmp/recsys/logs/exposures",
        # the in-chart Redis has no password, so its URL may sit in the Serve config
        "redis_url": "redis://recsys-redis.recsys.svc:6379/0",
        # closed by default: without an API key the write endpoints answer 401
        "security": {"insecure": False},
        # the chart autoscales the ranker as its own deployment, so the app must build one
        "stages": {"ranking": {"placement": "deployment"}},
    }
    assert cfg["http_options"]["port"] == 8000
    assert set(_deployments(default_render)) == {"Ingress", "RetrievalShard0", "RetrievalShard1", "Ranker"}


def test_shard_count_and_model_versions_flow(render):
    r = render(set_values={
        "serving.application.numShards": "6",
        "serving.application.rankingVersion": "v42",
        "modelStore.uri": "gs://bucket/models",
    })
    args = r.serve_config()["applications"][0]["args"]
    assert args["num_shards"] == 6
    shards = sorted(d for d in _deployments(r) if d.startswith("RetrievalShard"))
    assert shards == [f"RetrievalShard{i}" for i in range(6)]
    assert args["ranking_version"] == "v42"
    assert args["model_store_uri"] == "gs://bucket/models"
    head = _ray_cluster(r)["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert _env(head)["RECSYS_MODEL_STORE_URI"]["value"] == "gs://bucket/models"


def test_deployment_replicas_and_autoscaling_bounds_flow(render, tmp_path):
    values = tmp_path / "deployments.yaml"  # a file, because --set turns 2.5 into a string
    values.write_text(yaml.safe_dump({"serving": {"deployments": {
        "Ranker": {"autoscaling": {"minReplicas": 3, "maxReplicas": 30, "targetOngoingRequests": 2.5}},
        "Ingress": {"autoscaling": {"enabled": False}, "numReplicas": 5},
    }}}))
    r = render([values])
    deps = _deployments(r)
    assert deps["Ranker"]["autoscaling_config"] == {
        "min_replicas": 3, "max_replicas": 30, "target_ongoing_requests": 2.5,
    }
    assert deps["Ranker"]["num_replicas"] == "auto"  # lets autoscaling_config replace the code's num_replicas
    assert deps["Ingress"]["num_replicas"] == 5
    assert "autoscaling_config" not in deps["Ingress"]


def test_ray_worker_replicas_and_bounds_flow(render):
    r = render(set_values={
        "serving.workers.replicas": "4", "serving.workers.minReplicas": "3", "serving.workers.maxReplicas": "12",
    })
    (group,) = _ray_cluster(r)["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (4, 3, 12)
    assert _ray_cluster(r)["enableInTreeAutoscaling"] is True


def test_image_tag_flows_everywhere(render):
    r = render(set_values={"image.tag": "1.2.3", "kserve.enabled": "true", "training.runOnInstall": "true"})
    images = set()
    cluster = _ray_cluster(r)
    for t in [cluster["headGroupSpec"]["template"], *[g["template"] for g in cluster["workerGroupSpecs"]]]:
        images |= {c["image"] for c in t["spec"]["containers"]}
    for job in r.of_kind("RayJob"):
        images |= {c["image"] for c in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]}
    images |= {c["image"] for c in r.get("Deployment", "recsys-feast")["spec"]["template"]["spec"]["containers"]}
    for cj in r.of_kind("CronJob"):
        images |= {c["image"] for c in cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]}
    images |= {c["image"] for c in r.get("InferenceService")["spec"]["predictor"]["containers"]}
    assert images == {"ghcr.io/example/recsys-platform:1.2.3"}


def test_default_image_tag_is_app_version(default_render):
    head = _ray_cluster(default_render)["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "ghcr.io/example/recsys-platform:0.1.0"


def test_redis_url_secret_flows_to_every_pod(render):
    r = render(set_values={
        "redis.mode": "external", "redis.urlSecret.name": "prod-redis", "redis.urlSecret.urlKey": "url",
    })
    assert not r.of_kind("StatefulSet") and not r.of_kind("Secret")
    containers = []
    cluster = _ray_cluster(r)
    for t in [cluster["headGroupSpec"]["template"], *[g["template"] for g in cluster["workerGroupSpecs"]]]:
        containers += t["spec"]["containers"]
    containers += r.get("Deployment", "recsys-feast")["spec"]["template"]["spec"]["containers"]
    for job in r.training_job_manifests().values():
        containers += job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert len(containers) >= 5
    for c in containers:
        for var in ("REDIS_URL", "RECSYS_REDIS_URL"):  # the app's and recsys.platform.config's names
            ref = _env(c)[var]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "prod-redis", "key": "url"}, (c["name"], var)
    feast = r.get("Deployment", "recsys-feast")["spec"]["template"]["spec"]["containers"][0]
    assert _env(feast)["REDIS_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"]["name"] == "prod-redis"
    # the secret never lands in the Serve config
    assert "redis" not in r.get("RayService")["spec"]["serveConfigV2"].lower()


def test_internal_redis_statefulset_persistence(render, default_render):
    sts = default_render.get("StatefulSet", "recsys-redis")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    r = render(set_values={"redis.internal.persistence.enabled": "false"})
    sts = r.get("StatefulSet", "recsys-redis")
    assert "volumeClaimTemplates" not in sts
    assert {"name": "data", "emptyDir": {}} in sts["spec"]["template"]["spec"]["volumes"]


def test_training_jobs_flow(render):
    r = render(set_values={
        "training.jobs.ranking.workers.maxReplicas": "9",
        "training.jobs.ranking.workers.gpus": "2",
        "training.jobs.ranking.args": "{--epochs,5,--fast}",
        "training.jobs.retrieval.enabled": "false",
        "training.schedule.jobs": "{ranking}",
        "training.schedule.cron": "15 4 * * 1",
    })
    jobs = r.training_job_manifests()
    assert set(jobs) == {"ranking"}
    spec = jobs["ranking"]["spec"]
    # 2 pods x 2 GPUs -> 4 Ray Train workers, each with half of a pod's 2 CPUs; job args come last
    assert spec["entrypoint"] == ("recsys train ranking --num-workers 4 --cpus-per-worker 1 --use-gpu "
                                  "--storage-path s3://recsys-models/ray-results "
                                  "--dataset-uri s3://recsys-models/training-datasets --epochs 5 --fast")
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["maxReplicas"] == 9
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert jobs["ranking"]["metadata"]["generateName"] == "recsys-train-ranking-"
    cron = r.get("CronJob", "recsys-training-schedule")
    assert cron["spec"]["schedule"] == "15 4 * * 1"
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--in-cluster", "--configmap=recsys-training-jobs", "--job=ranking"]


def test_training_entrypoint_scale_out_flags(render):
    """--num-workers/--cpus-per-worker/--use-gpu/--storage-path/--dataset-uri follow the worker group and training
    values (the dataset URI is where the jobs write the training tables the worker pods stream)."""
    r = render(set_values={"training.storagePath": "gs://bucket/ray", "training.jobs.retrieval.workers.replicas": "3",
                           "training.datasetUri": "gs://bucket/tables",
                           "training.jobs.retrieval.workers.resources.limits.cpu": "1500m"})
    jobs = r.training_job_manifests()
    assert jobs["retrieval"]["spec"]["entrypoint"] == (
        "recsys train retrieval --num-workers 3 --cpus-per-worker 1.5 --storage-path gs://bucket/ray "
        "--dataset-uri gs://bucket/tables")
    assert "--use-gpu" not in jobs["ranking"]["spec"]["entrypoint"]
    r = render(set_values={"training.storagePath": "", "training.datasetUri": ""},
               set_json={"training.jobs.ranking.workers.numWorkers": 8,
                         "training.jobs.ranking.workers.cpusPerWorker": 0.5})
    assert r.training_job_manifests()["ranking"]["spec"]["entrypoint"] == (
        "recsys train ranking --num-workers 8 --cpus-per-worker 0.5")


@pytest.mark.parametrize(("set_json", "message"), [
    ({"training.jobs.retrieval.workers.numWorkers": 9},
     "training.jobs.retrieval.workers: 9 Ray Train workers (numWorkers) do not fit into maxReplicas=4 pods of 2 CPUs"),
    ({"training.jobs.retrieval.workers.cpusPerWorker": 3},
     "training.jobs.retrieval.workers: cpusPerWorker (3) exceeds the CPUs of one worker pod (2)"),
    ({"training.jobs.ranking.workers.gpus": 1, "training.jobs.ranking.workers.numWorkers": 5},
     "training.jobs.ranking.workers: 5 Ray Train workers (numWorkers) do not fit into maxReplicas=4 pods"),
])
def test_training_sizes_that_cannot_fit_fail_at_render(render, set_json, message):
    with pytest.raises(HelmError) as err:
        render(set_json=set_json)
    assert message in err.value.stderr


def test_serve_speed_switches_in_serving_pod_env(render, default_render):
    def env_of(r):
        cluster = _ray_cluster(r)
        pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
        return [{e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]} for p in pods]

    for env in env_of(default_render):  # defaults: throughput mode on, HAProxy off
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and "RAY_SERVE_ENABLE_HA_PROXY" not in env
    for env in env_of(render(set_values={"serving.throughputOptimized": "false", "serving.haproxyIngress": "true"})):
        assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in env and env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    for job in default_render.training_job_manifests().values():  # training clusters run no Serve
        pod = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in {e["name"] for e in pod["env"]}


def test_run_on_install_renders_named_rayjobs(all_features_render):
    names = sorted(j["metadata"]["name"] for j in all_features_render.of_kind("RayJob"))
    assert names == ["recsys-train-ranking", "recsys-train-retrieval"]
    for job in all_features_render.of_kind("RayJob"):
        assert job["spec"]["entrypoint"].startswith("recsys train ")
        assert job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True


def test_experiments_configmap_flows_and_is_mounted(render, tmp_path):
    values = tmp_path / "exp.yaml"
    values.write_text(yaml.safe_dump({"experiments": {"config": {"experiments": [
        {"name": "ranker-v2", "variants": [{"name": "control", "weight": 0.5},
                                           {"name": "treatment", "weight": 0.5, "ranking_version": "v2"}]},
    ]}}}))
    r = render([values])
    data = yaml.safe_load(r.get("ConfigMap", "recsys-experiments")["data"]["experiments.yaml"])
    assert data["experiments"][0]["variants"][1]["ranking_version"] == "v2"
    worker = _ray_cluster(r)["workerGroupSpecs"][0]["template"]["spec"]
    assert {"name": "experiments", "configMap": {"name": "recsys-experiments"}} in worker["volumes"]
    mount = [m for m in worker["containers"][0]["volumeMounts"] if m["name"] == "experiments"][0]
    assert mount == {"name": "experiments", "mountPath": "/etc/recsys/experiments", "readOnly": True}
    assert "subPath" not in mount  # subPath mounts never see ConfigMap updates


def test_feast_autoscaling_and_pdb_flow(render):
    r = render(set_values={
        "features.feast.server.autoscaling.minReplicas": "4",
        "features.feast.server.autoscaling.maxReplicas": "9",
        "features.feast.server.podDisruptionBudget.minAvailable": "3",
    })
    hpa = r.get("HorizontalPodAutoscaler", "recsys-feast")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 9)
    assert "replicas" not in r.get("Deployment", "recsys-feast")["spec"]
    assert r.get("PodDisruptionBudget", "recsys-feast")["spec"]["minAvailable"] == 3
    r = render(set_values={"features.feast.server.autoscaling.enabled": "false",
                           "features.feast.server.replicas": "3"})
    assert not r.of_kind("HorizontalPodAutoscaler")
    assert r.get("Deployment", "recsys-feast")["spec"]["replicas"] == 3


def test_kserve_inference_service_v2(render):
    r = render(set_values={"kserve.enabled": "true", "kserve.maxReplicas": "7", "kserve.modelName": "ranker"})
    isvc = r.get("InferenceService", "recsys-ranker")
    pred = isvc["spec"]["predictor"]
    assert pred["maxReplicas"] == 7
    c = pred["containers"][0]
    assert "--model_name=ranker" in c["args"]
    assert "--model_store_uri=s3://recsys-models/store" in c["args"]
    assert not [a for a in c["args"] if a.startswith("--model_version")]  # "latest" = promoted
    r = render(set_values={"kserve.enabled": "true", "serving.application.rankingVersion": "v7"})
    assert "--model_version=v7" in r.get("InferenceService")["spec"]["predictor"]["containers"][0]["args"]
    assert _env(c)["PROTOCOL"]["value"] == "v2"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_ingress_and_service(all_features_render, production_render):
    ing = all_features_render.get("Ingress", "recsys-serving")
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "recs.test"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "recsys-serving", "port": {"name": "serve"}}
    assert ing["spec"]["tls"] == [{"hosts": ["recs.test"], "secretName": "recs-tls"}]
    svc = all_features_render.get("RayService")["spec"]["serveService"]
    assert svc["metadata"]["name"] == "recsys-serving"
    assert svc["spec"]["ports"] == [{"name": "serve", "port": 8000, "protocol": "TCP"}]
    assert production_render.get("Ingress")["spec"]["ingressClassName"] == "nginx"


def test_api_key_secret_reference(all_features_render, default_render):
    worker = _ray_cluster(all_features_render)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert _env(worker)["RECSYS_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "recsys-api-key", "key": "api-key"}
    worker = _ray_cluster(default_render)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert "RECSYS_API_KEY" not in _env(worker)


def test_network_policy_toggle(render, production_render):
    assert not render(set_values={"networkPolicy.enabled": "false"}).of_kind("NetworkPolicy")
    http = production_render.get("NetworkPolicy", "recsys-serving-http")
    assert http["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]


def test_components_can_be_switched_off(render):
    r = render(set_values={"serving.enabled": "false", "training.enabled": "false",
                           "features.feast.enabled": "false"})
    kinds = {o["kind"] for o in r.objects}
    assert not kinds & {"RayService", "RayJob", "CronJob", "Deployment", "HorizontalPodAutoscaler"}
    assert "StatefulSet" in kinds  # Redis still serves the online store/cache


def test_release_name_and_namespace_flow(render):
    r = render(release="shop", namespace="ml")
    assert r.get("RayService")["metadata"]["name"] == "shop-recsys"
    assert r.get("Secret")["stringData"]["redis-url"] == "redis://shop-recsys-redis.ml.svc:6379/0"
    rb = r.get("RoleBinding")
    assert rb["subjects"][0] == {"kind": "ServiceAccount", "name": "shop-recsys-training-submitter",
                                 "namespace": "ml"}


def test_serve_config_is_valid_for_ray_serve(default_render, production_render):
    """serveConfigV2 parses with Ray Serve's own deploy schema (what KubeRay submits to the cluster)."""
    from ray.serve import schema

    for rendered in (default_render, production_render):
        parsed = schema.ServeDeploySchema.model_validate(rendered.serve_config())
        (app,) = parsed.applications
        assert app.import_path == "recsys.serving.app:build_app"


def test_serve_args_are_accepted_by_the_serving_config(default_render, production_render):
    """The builder args the chart renders are valid `recsys.serving` ServingConfig values (extra keys forbidden)."""
    from recsys.serving import config

    for rendered in (default_render, production_render):
        cfg = config.ServingConfig(**rendered.serve_config()["applications"][0]["args"])
        assert cfg.num_shards == rendered.serve_config()["applications"][0]["args"]["num_shards"]


def test_experiments_configmap_is_a_valid_experiments_config(default_render, production_render):
    """What the ConfigMap holds is accepted by recsys.experiments' own loader (the file serving re-reads)."""
    from recsys.experiments import config

    for rendered in (default_render, production_render):
        text = rendered.get("ConfigMap", "recsys-experiments")["data"]["experiments.yaml"]
        parsed = config.parse_config(yaml.safe_load(text), source="experiments ConfigMap")
        assert parsed.version == 1
    (exp,) = config.parse_config(yaml.safe_load(
        production_render.get("ConfigMap", "recsys-experiments")["data"]["experiments.yaml"])).experiments
    assert exp.variant("treatment").ranking_version == "v20261120-034000-000000"


def test_production_logs_go_to_object_storage_not_a_shared_volume(production_render, render):
    """Issue 22: exposures/outcomes/events reach parquet days at a URI through the Redis stream."""
    (app,) = production_render.serve_config()["applications"]
    assert app["args"]["log_archive"] == {"uri": "s3://prod-recsys-logs/serving", "retention_days": 400}
    (default_app,) = render().serve_config()["applications"]
    assert "log_archive" not in default_app["args"], "off by default (JSON lines under logDir)"
    from recsys.platform.log_archiver import LogArchiveConfig

    LogArchiveConfig(**app["args"]["log_archive"])  # the serving arg the chart writes is one serving accepts
