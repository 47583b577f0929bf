"""Generate helm/recsys/values.schema.json (the chart's values schema).

Why generated: the schema closes every object (`additionalProperties: false`) and lists every key as
required, which is tedious and error-prone by hand. Edit this file, then run
`python helm/tools/values_schema.py` (writes the chart's schema; pass a path to write elsewhere).
Defaults are merged by helm before validation, so "required" only rejects keys nulled out by an override.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "recsys" / "values.schema.json"


def obj(props: dict, required: list[str] | None = None, desc: str | None = None, extra: bool = False) -> dict:
    """A closed object schema; every property is required unless `required` says otherwise."""
    d = {"type": "object", "additionalProperties": extra, "properties": props}
    d["required"] = required if required is not None else sorted(props)
    if desc:
        d["description"] = desc
    return d


def S(desc: str | None = None, **kw) -> dict:  # noqa: N802 - short names keep the table below readable
    """A string schema."""
    return {"type": "string", **({"description": desc} if desc else {}), **kw}


def I(mn: int | None = None, mx: int | None = None, desc: str | None = None) -> dict:  # noqa: E743, N802
    """An integer schema with optional bounds."""
    d: dict = {"type": "integer"}
    if mn is not None:
        d["minimum"] = mn
    if mx is not None:
        d["maximum"] = mx
    if desc:
        d["description"] = desc
    return d


def B(desc: str | None = None) -> dict:  # noqa: N802
    """A boolean schema."""
    return {"type": "boolean", **({"description": desc} if desc else {})}


def REF(name: str) -> dict:  # noqa: N802
    """A reference into $defs."""
    return {"$ref": f"#/$defs/{name}"}


defs = {
    "cliArgs": {
        "type": "array",
        "items": {"type": ["string", "number", "boolean"]},
        "description": "command-line arguments (numbers/booleans are passed as their string form)",
    },
    "quantity": {
        "anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"},
        ],
        "description": "Kubernetes quantity, e.g. 500m, 2, 4Gi",
    },
    "resourceList": {"type": "object", "additionalProperties": REF("quantity")},
    "resources": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"requests": REF("resourceList"), "limits": REF("resourceList")},
        "description": "Container resources {requests, limits}",
    },
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
    "tolerations": {"type": "array", "items": {"type": "object"}},
    "affinity": {"type": "object"},
    "image": obj(
        {
            "repository": S("image repository", minLength=1),
            "tag": S("image tag"),
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        }
    ),
    "name": {
        "type": "string",
        "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        "maxLength": 63,
        "description": "a DNS-1123 label",
    },
    "optionalName": {"anyOf": [{"const": ""}, REF("name")]},
    "rayStartParams": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "ray start flags without leading dashes; values are strings",
    },
    "cron": {
        "type": "string",
        "pattern": r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$",
        "description": "cron expression (5 fields) or @daily-style macro",
    },
    "rayAutoscaler": obj(
        {
            "enabled": B(),
            "idleTimeoutSeconds": I(0),
            "upscalingMode": {"enum": ["Default", "Conservative", "Aggressive"]},
        }
    ),
    "replicaBounds": obj({"replicas": I(0), "minReplicas": I(0), "maxReplicas": I(1)}),
    "probe": obj({"enabled": B(), "path": S(pattern="^/"), "periodSeconds": I(1), "failureThreshold": I(1)}),
    "livenessProbe": obj(
        {
            "enabled": B(),
            "path": S(pattern="^/"),
            "initialDelaySeconds": I(0),
            "periodSeconds": I(1),
            "failureThreshold": I(1),
        }
    ),
    "serveDeployment": obj(
        {
            "perShard": B("one deployment per retrieval shard, named <key>0..<key>N-1"),
            "numReplicas": I(1, desc="replicas when autoscaling is off"),
            "autoscaling": obj(
                {
                    "enabled": B(),
                    "minReplicas": I(0),
                    "maxReplicas": I(1),
                    "targetOngoingRequests": {"type": "number", "exclusiveMinimum": 0},
                }
            ),
            "maxOngoingRequests": I(1),
            "numCpus": {"type": "number", "minimum": 0},
            "memoryBytes": I(0),
        }
    ),
    "trainingJob": obj(
        {
            "enabled": B(),
            "command": S(minLength=1),
            "args": REF("cliArgs"),
            "workers": obj(
                {
                    "groupName": REF("name"),
                    "replicas": I(0),
                    "minReplicas": I(0),
                    "maxReplicas": I(1),
                    "gpus": I(0, desc="GPUs per worker pod; > 0 adds --use-gpu to the entrypoint"),
                    "numWorkers": I(0, desc="Ray Train workers (--num-workers); 0: replicas x max(1, gpus)"),
                    "cpusPerWorker": {
                        "type": "number",
                        "minimum": 0,
                        "description": "CPUs per Ray Train worker (--cpus-per-worker); 0: pod CPUs / max(1, gpus)",
                    },
                    "resources": REF("resources"),
                    "nodeSelector": REF("nodeSelector"),
                    "tolerations": REF("tolerations"),
                },
                required=["groupName", "replicas", "minReplicas", "maxReplicas", "gpus", "resources",
                          "nodeSelector", "tolerations"],
            ),
        }
    ),
    "rolloutVersion": {
        "anyOf": [{"type": "null"}, {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}$"}],
        "description": "a model-store version id (1-64 of a-z 0-9 _ . -, starting alphanumeric; numeric ids need "
        "--set-string); null or \"latest\": the promoted version",
    },
    "hpa": obj({"enabled": B(), "minReplicas": I(1), "maxReplicas": I(1), "targetCPUUtilizationPercentage": I(1, 100)}),
}


def head() -> dict:
    return obj(
        {
            "rayStartParams": REF("rayStartParams"),
            "resources": REF("resources"),
            "nodeSelector": REF("nodeSelector"),
            "tolerations": REF("tolerations"),
            "affinity": REF("affinity"),
        }
    )


props = {
    "nameOverride": S(maxLength=30),
    "fullnameOverride": S(maxLength=30),
    "commonLabels": REF("labels"),
    "image": REF("image"),
    "imagePullSecrets": {"type": "array", "items": obj({"name": REF("name")})},
    "serviceAccount": obj({"create": B(), "name": REF("optionalName"), "annotations": REF("labels")}),
    "podSecurityContext": {"type": "object", "description": "pod securityContext (validated by Kubernetes)"},
    "containerSecurityContext": {
        "type": "object",
        "description": "container securityContext (validated by Kubernetes)",
    },
    "tmpVolumeSizeLimit": REF("quantity"),
    "extraEnv": {
        "type": "array",
        "items": {"type": "object", "required": ["name"], "properties": {"name": S(minLength=1)}},
    },
    "platform": obj(
        {
            "dataDir": S("RECSYS_DATA_DIR", pattern="^/"),
            "featureRepoDir": S("RECSYS_FEATURE_REPO_DIR", pattern="^/"),
            "logDir": S("RECSYS_LOG_DIR", pattern="^/"),
            "logArchive": obj(
                {
                    "uri": S("s3://bucket/prefix, gs://..., file:///path (empty: off)",
                             pattern="^$|^[a-z][a-z0-9+.-]*://|^/"),
                    "retentionDays": I(0, desc="Days of logs kept (0 = all)"),
                },
                desc="Exposure/outcome/event logs as daily parquet at a URI via the Redis stream (serving arg "
                     "log_archive); uri empty = JSON lines under logDir",
            ),
        }
    ),
    "modelStore": obj(
        {
            "uri": S(
                "model store URI, e.g. s3://bucket/path or file:///mnt/model-store",
                pattern=r"^[a-z][a-z0-9+.-]*://\S+$",
            ),
            "credentialsSecret": REF("optionalName"),
            "existingClaim": REF("optionalName"),
            "mountPath": S(pattern="^/"),
        }
    ),
    "redis": obj(
        {
            "cluster": B(),
            "mode": {"enum": ["internal", "external"], "description": "internal StatefulSet or external Redis"},
            "urlSecret": obj(
                {"name": REF("optionalName"), "urlKey": S(minLength=1), "feastConnectionKey": S(minLength=1)}
            ),
            "internal": obj(
                {
                    "image": REF("image"),
                    "appendOnly": B(),
                    "maxMemory": S(pattern=r"^([0-9]+(b|kb|mb|gb)?)?$"),
                    "maxMemoryPercent": I(10, 90, "Share of limits.memory given to maxmemory when maxMemory is empty"),
                    "maxMemoryPolicy": {
                        "enum": [
                            "noeviction",
                            "allkeys-lru",
                            "allkeys-lfu",
                            "volatile-lru",
                            "volatile-lfu",
                            "allkeys-random",
                            "volatile-random",
                            "volatile-ttl",
                        ]
                    },
                    "persistence": obj(
                        {
                            "enabled": B(),
                            "size": REF("quantity"),
                            "storageClass": S(),
                            "accessModes": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "enum": ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany"]
                                },
                            },
                        }
                    ),
                    "resources": REF("resources"),
                    "nodeSelector": REF("nodeSelector"),
                    "tolerations": REF("tolerations"),
                    "affinity": REF("affinity"),
                }
            ),
        }
    ),
    "serving": obj(
        {
            "enabled": B(),
            "rayVersion": S(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+"),
            "application": obj(
                {
                    "name": S(minLength=1),
                    "importPath": S("module:attribute", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"),
                    "routePrefix": S(pattern="^/"),
                    "retrievalVersion": S(minLength=1),
                    "rankingVersion": S(minLength=1),
                    "numShards": I(1, 256, "number of retrieval shards"),
                    "extraArgs": {"type": "object"},
                }
            ),
            "deployments": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": REF("serveDeployment"),
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$"},
            },
            "http": obj({"port": I(1, 65535), "requestTimeoutSeconds": I(0)}),
            "head": head(),
            "workers": obj(
                {
                    "groupName": REF("name"),
                    "replicas": I(0),
                    "minReplicas": I(0),
                    "maxReplicas": I(1),
                    "rayStartParams": REF("rayStartParams"),
                    "resources": REF("resources"),
                    "nodeSelector": REF("nodeSelector"),
                    "tolerations": REF("tolerations"),
                    "affinity": REF("affinity"),
                }
            ),
            "autoscaler": REF("rayAutoscaler"),
            "probes": obj({"readiness": REF("probe"), "liveness": REF("livenessProbe")}),
            "throughputOptimized": B("RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in the serving pods (Ray >= 2.56)"),
            "haproxyIngress": B("RAY_SERVE_ENABLE_HA_PROXY=1 in the serving pods (image must contain haproxy)"),
            "upgradeStrategy": {"enum": ["NewCluster", "None"]},
            "rayClusterDeletionDelaySeconds": I(0),
            "service": obj({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "annotations": REF("labels")}),
            "ingress": obj(
                {
                    "enabled": B(),
                    "className": S(),
                    "annotations": REF("labels"),
                    "host": S(),
                    "path": S(pattern="^/"),
                    "pathType": {"enum": ["Prefix", "Exact", "ImplementationSpecific"]},
                    "tlsSecretName": REF("optionalName"),
                }
            ),
            "podDisruptionBudget": obj({"enabled": B(), "maxUnavailable": {"anyOf": [I(0), S(pattern=r"^[0-9]+%$")]}}),
            "apiKey": obj({"existingSecret": REF("optionalName"), "key": S(minLength=1)}),
            "security": obj(
                {"insecure": B("with no API key configured, leave the write endpoints open (serving arg "
                               "security.insecure); local experiments only")}
            ),
            "rollout": obj(
                {
                    "retrievalVersion": REF("rolloutVersion"),
                    "rankingVersion": REF("rolloutVersion"),
                    "preload": {
                        "type": "array",
                        "items": obj(
                            {"retrievalVersion": REF("rolloutVersion"), "rankingVersion": REF("rolloutVersion")},
                            required=[],
                        )
                        | {"minProperties": 1},
                        "description": "variant bundles kept loaded (RolloutSpec.preload)",
                    },
                    "generation": I(0, desc="bump to force a re-resolve of promoted versions (RolloutSpec.generation)"),
                    "settleTimeoutSeconds": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "ingress: max wait for shards/ranker to update (RolloutSpec.settle_timeout_s)",
                    },
                },
                required=["preload", "generation", "settleTimeoutSeconds"],
                desc="the Serve user_config (RolloutSpec) of every deployment",
            ),
        }
    ),
    "training": obj(
        {
            "enabled": B(),
            "runOnInstall": B(),
            "rayVersion": S(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+"),
            "shutdownAfterJobFinishes": B(),
            "ttlSecondsAfterFinished": I(0),
            "activeDeadlineSeconds": I(1),
            "backoffLimit": I(0),
            "storagePath": S(
                "Ray Train storage (--storage-path): a URI every pod reaches, or empty for the CLI default",
                pattern=r"^([a-z][a-z0-9+.-]*://\S+|/\S*)?$",
            ),
            "datasetUri": S(
                "Training tables (--dataset-uri), streamed by the Ray Train workers: a URI every pod reaches, or "
                "empty for <storagePath>/datasets",
                pattern=r"^((file|s3|gs|gcs|hdfs|abfs|abfss)://\S+|/\S*)?$",
            ),
            "head": obj({"rayStartParams": REF("rayStartParams"), "resources": REF("resources")}),
            "autoscaler": REF("rayAutoscaler"),
            "jobs": {
                "type": "object",
                "additionalProperties": REF("trainingJob"),
                "propertyNames": {"pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 20},
            },
            "schedule": obj(
                {
                    "enabled": B(),
                    "cron": REF("cron"),
                    "timeZone": S(minLength=1),
                    "jobs": {"type": "array", "minItems": 1, "items": S(minLength=1), "uniqueItems": True},
                    "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
                    "successfulJobsHistoryLimit": I(0),
                    "failedJobsHistoryLimit": I(0),
                    "resources": REF("resources"),
                }
            ),
        }
    ),
    "features": obj(
        {
            "feast": obj(
                {
                    "enabled": B(),
                    "featureStoreYaml": S("feature_store.yaml content", minLength=1),
                    "server": obj(
                        {
                            "replicas": I(1),
                            "port": I(1, 65535),
                            "resources": REF("resources"),
                            "autoscaling": REF("hpa"),
                            "podDisruptionBudget": obj(
                                {"enabled": B(), "minAvailable": {"anyOf": [I(0), S(pattern=r"^[0-9]+%$")]}}
                            ),
                            "nodeSelector": REF("nodeSelector"),
                            "tolerations": REF("tolerations"),
                            "affinity": REF("affinity"),
                        }
                    ),
                    "materialize": obj(
                        {
                            "enabled": B(),
                            "cron": REF("cron"),
                            "timeZone": S(minLength=1),
                            "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                            "args": REF("cliArgs"),
                            "resources": REF("resources"),
                        }
                    ),
                }
            )
        }
    ),
    "kserve": obj(
        {
            "enabled": B(),
            "modelName": REF("name"),
            "deploymentMode": {"enum": ["RawDeployment", "Serverless"]},
            "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "args": REF("cliArgs"),
            "port": I(1, 65535),
            "minReplicas": I(0),
            "maxReplicas": I(1),
            "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
            "scaleTarget": I(1),
            "resources": REF("resources"),
        }
    ),
    "experiments": obj(
        {
            "mountPath": S(pattern="^/"),
            "config": {"type": "object", "description": "experiment definitions (recsys.experiments format)"},
            "stateDir": S("writable folder for the slot ledger and the frozen plans; empty = beside the ConfigMap",
                          pattern="^(/.*)?$"),
            "stateVolume": {"type": "object",
                            "description": "volume source mounted at stateDir (required when stateDir is set)"},
        }
    ),
    "console": obj(
        {
            "enabled": B("render the read-only operator console (recsys console) Deployment + Service"),
            "replicas": I(1),
            "port": I(1, 65535),
            "readKey": obj({"existingSecret": REF("optionalName"), "key": S(minLength=1)}),
            "insecure": B("serve every console page without a key (local clusters only)"),
            "refreshSeconds": I(2, 3600),
            "scrapeIntervalSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
            "service": obj({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "annotations": REF("labels")}),
            "resources": REF("resources"),
            "nodeSelector": REF("nodeSelector"),
            "tolerations": REF("tolerations"),
            "affinity": REF("affinity"),
        }
    ),
    "networkPolicy": obj(
        {
            "enabled": B(),
            "kuberayOperatorNamespace": REF("name"),
            "servingFrom": {"type": "array", "items": {"type": "object"}},
            "consoleFrom": {"type": "array", "items": {"type": "object"}},
        }
    ),
    "grafanaDashboard": obj({"enabled": B(), "labels": REF("labels")}),
}
schema = {
    "$schema": "https://json-schema.org/draft-07/schema#",
    "title": "recsys chart values",
    "type": "object",
    "additionalProperties": False,
    "properties": props,
    "required": sorted(props),
    "$defs": defs,
}
# external redis requires a secret name
schema["allOf"] = [
    {
        "if": {"properties": {"redis": {"properties": {"mode": {"const": "external"}}}}},
        "then": {"properties": {"redis": {"properties": {"urlSecret": {"properties": {"name": REF("name")}}}}}},
    }
]


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(json.dumps(schema, indent=2) + "\n")
