{{/*
Names, labels and the pod fragments shared by every workload (env, volumes, security).
*/}}

{{- define "recsys.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix. Kept to 30 characters because KubeRay derives longer names from RayService/RayJob
names (e.g. "<rayjob>-<5 random>-head-svc") and RayJob names are limited to 47 characters.
*/}}
{{- define "recsys.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 30 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "recsys.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "recsys.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recsys.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "recsys.labels" -}}
helm.sh/chart: {{ include "recsys.chart" . }}
{{ include "recsys.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: recsys
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels for one component: include "recsys.componentLabels" (dict "ctx" $ "component" "serving") */}}
{{- define "recsys.componentLabels" -}}
{{ include "recsys.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "recsys.componentSelectorLabels" -}}
{{ include "recsys.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "recsys.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recsys.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "recsys.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the Secret holding REDIS_URL and the Feast connection string. */}}
{{- define "recsys.redisSecretName" -}}
{{- if .Values.redis.urlSecret.name }}
{{- .Values.redis.urlSecret.name }}
{{- else if eq .Values.redis.mode "internal" }}
{{- printf "%s-redis" (include "recsys.fullname" .) }}
{{- else }}
{{- fail "redis.urlSecret.name is required when redis.mode is \"external\"" }}
{{- end }}
{{- end }}

{{/* URL of the in-chart Redis (no password), or "" when the URL lives in a user-provided Secret. */}}
{{- define "recsys.internalRedisUrl" -}}
{{- if and (eq .Values.redis.mode "internal") (not .Values.redis.urlSecret.name) }}
{{- printf "redis://%s:6379/0" (include "recsys.redisHost" .) }}
{{- end }}
{{- end }}

{{- define "recsys.redisHost" -}}
{{- printf "%s-redis.%s.svc" (include "recsys.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "recsys.experimentsFile" -}}
{{- printf "%s/experiments.yaml" (trimSuffix "/" .Values.experiments.mountPath) }}
{{- end }}

{{- /* experiments.stateDir without its trailing slash ("" when unset); fails when it has no volume. */ -}}
{{- define "recsys.experimentsStateDir" -}}
{{- with .Values.experiments.stateDir }}
{{- if not $.Values.experiments.stateVolume }}
{{- fail "experiments.stateDir needs experiments.stateVolume (a volume source, e.g. {persistentVolumeClaim: {claimName: ...}})" }}
{{- end }}
{{- if eq (trimSuffix "/" .) (trimSuffix "/" $.Values.experiments.mountPath) }}
{{- fail "experiments.stateDir must differ from experiments.mountPath (the read-only ConfigMap)" }}
{{- end }}
{{- trimSuffix "/" . }}
{{- end }}
{{- end }}

{{- /* The state volume's mount (readOnly: "true" for readers such as the console) and volume. */ -}}
{{- define "recsys.experimentsStateMount" -}}
{{- with include "recsys.experimentsStateDir" .ctx }}
- name: experiments-state
  mountPath: {{ . }}
  readOnly: {{ $.readOnly }}
{{- end }}
{{- end }}

{{- define "recsys.experimentsStateVolume" -}}
{{- if include "recsys.experimentsStateDir" . }}
- name: experiments-state
  {{- toYaml .Values.experiments.stateVolume | nindent 2 }}
{{- end }}
{{- end }}

{{- /* A rollout version as the app wants it: "" for the promoted version (null, "", latest, promoted, none). */ -}}
{{- define "recsys.rolloutVersion" -}}
{{- if not (kindIs "invalid" .) }}
{{- $v := toString . -}}
{{- if not (has (lower (trim $v)) (list "" "latest" "promoted" "none")) }}{{ $v }}{{ end }}
{{- end }}
{{- end }}

{{- /*
The Serve user_config of every deployment of the app, as JSON: recsys.serving.models.rollout.RolloutSpec.
Versions: serving.rollout.*, else serving.application.* (null = promoted). preload: serving.rollout.preload plus
every (retrieval_version, ranking_version) pair named by a variant in experiments.config, de-duplicated and
sorted, i.e. what the app's build_app would put there itself (a Serve config's user_config replaces the app's).
*/ -}}
{{- define "recsys.rolloutSpec" -}}
{{- $r := .Values.serving.rollout -}}
{{- $app := .Values.serving.application -}}
{{- $spec := dict "retrieval_version" nil "ranking_version" nil "generation" (int64 $r.generation) "settle_timeout_s" $r.settleTimeoutSeconds -}}
{{- $rv := include "recsys.rolloutVersion" (ternary $app.retrievalVersion $r.retrievalVersion (kindIs "invalid" $r.retrievalVersion)) -}}
{{- $kv := include "recsys.rolloutVersion" (ternary $app.rankingVersion $r.rankingVersion (kindIs "invalid" $r.rankingVersion)) -}}
{{- if $rv }}{{- $_ := set $spec "retrieval_version" $rv -}}{{- end }}
{{- if $kv }}{{- $_ := set $spec "ranking_version" $kv -}}{{- end }}
{{- $pairs := dict -}}
{{- range $p := $r.preload }}
{{- $pr := include "recsys.rolloutVersion" (get $p "retrievalVersion") -}}
{{- $pk := include "recsys.rolloutVersion" (get $p "rankingVersion") -}}
{{- if or $pr $pk }}{{- $_ := set $pairs (printf "%s\t%s" $pr $pk) (list $pr $pk) -}}{{- end }}
{{- end }}
{{- range $e := (.Values.experiments.config.experiments | default list) }}
{{- range $v := ($e.variants | default list) }}
{{- $pr := toString (get $v "retrieval_version" | default "") -}}
{{- $pk := toString (get $v "ranking_version" | default "") -}}
{{- if or $pr $pk }}{{- $_ := set $pairs (printf "%s\t%s" $pr $pk) (list $pr $pk) -}}{{- end }}
{{- end }}
{{- end }}
{{- $preload := list -}}
{{- range $key := keys $pairs | sortAlpha }}
{{- $pair := get $pairs $key -}}
{{- $item := dict "retrieval_version" nil "ranking_version" nil -}}
{{- with index $pair 0 }}{{- $_ := set $item "retrieval_version" . -}}{{- end }}
{{- with index $pair 1 }}{{- $_ := set $item "ranking_version" . -}}{{- end }}
{{- $preload = append $preload $item -}}
{{- end }}
{{- $_ := set $spec "preload" $preload -}}
{{- toJson $spec -}}
{{- end }}

{{/* Environment shared by every platform container. */}}
{{- define "recsys.commonEnv" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "recsys.redisSecretName" . }}
      key: {{ .Values.redis.urlSecret.urlKey }}
- name: RECSYS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "recsys.redisSecretName" . }}
      key: {{ .Values.redis.urlSecret.urlKey }}
- name: RECSYS_MODEL_STORE_URI
  value: {{ .Values.modelStore.uri | quote }}
- name: RECSYS_DATA_DIR
  value: {{ .Values.platform.dataDir | quote }}
- name: RECSYS_FEATURE_REPO_DIR
  value: {{ .Values.platform.featureRepoDir | quote }}
- name: RECSYS_LOG_DIR
  value: {{ .Values.platform.logDir | quote }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: HOME
  value: /tmp
{{- with include "recsys.experimentsStateDir" . }}
- name: RECSYS_EXPERIMENTS_LEDGER_DIR
  value: {{ . | quote }}
- name: RECSYS_EXPERIMENTS_PLANS_DIR
  value: {{ printf "%s/plans" . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes every platform pod has: writable /tmp and, if configured, the model store claim. */}}
{{- define "recsys.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpVolumeSizeLimit }}
{{- if .Values.modelStore.existingClaim }}
- name: model-store
  persistentVolumeClaim:
    claimName: {{ .Values.modelStore.existingClaim }}
{{- end }}
{{- end }}

{{- define "recsys.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.modelStore.existingClaim }}
- name: model-store
  mountPath: {{ .Values.modelStore.mountPath }}
{{- end }}
{{- end }}

{{/*
Ray container resources with the GPU count added: include "recsys.rayResources" (dict "resources" .resources "gpus" 1)
*/}}
{{- define "recsys.rayResources" -}}
{{- $res := deepCopy (default dict .resources) }}
{{- if gt (int .gpus) 0 }}
{{- $limits := default dict $res.limits }}
{{- $_ := set $limits "nvidia.com/gpu" (int .gpus) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/*
Pod template of a Ray head or worker, for serving (RayService) and training (RayJob) clusters.
Args (dict): ctx, component ("serving"|"training"), extraLabels (dict), resources, gpus, nodeSelector,
tolerations, affinity, head (bool), serving (bool: mount experiments, API key, Serve port and probes).
*/}}
{{- define "recsys.rayPodTemplate" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
metadata:
  labels:
    {{- include "recsys.componentLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
    {{- with .extraLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "recsys.serviceAccountName" $ctx }}
  automountServiceAccountToken: false
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with .nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ if .head }}ray-head{{ else }}ray-worker{{ end }}
      image: {{ include "recsys.image" $ctx }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      {{- if or .head .serving }}
      ports:
        {{- if .head }}
        - {name: gcs-server, containerPort: 6379, protocol: TCP}
        - {name: dashboard, containerPort: 8265, protocol: TCP}
        - {name: client, containerPort: 10001, protocol: TCP}
        {{- end }}
        {{- if .serving }}
        - {name: serve, containerPort: {{ $v.serving.http.port }}, protocol: TCP}
        {{- end }}
      {{- end }}
      env:
        {{- include "recsys.commonEnv" $ctx | nindent 8 }}
        {{- if and .serving $v.serving.throughputOptimized }}
        # Ray Serve throughput mode (Ray >= 2.56): replicas call each other over direct gRPC.
        - name: RAY_SERVE_THROUGHPUT_OPTIMIZED
          value: "1"
        {{- end }}
        {{- if and .serving $v.serving.haproxyIngress }}
        # HAProxy as Serve's HTTP ingress (the image must contain haproxy).
        - name: RAY_SERVE_ENABLE_HA_PROXY
          value: "1"
        {{- end }}
        {{- if and .serving $v.serving.apiKey.existingSecret }}
        - name: RECSYS_API_KEY
          valueFrom:
            secretKeyRef:
              name: {{ $v.serving.apiKey.existingSecret }}
              key: {{ $v.serving.apiKey.key }}
        {{- end }}
      {{- with $ctx.Values.modelStore.credentialsSecret }}
      envFrom:
        - secretRef:
            name: {{ . }}
      {{- end }}
      {{- if and .serving (not .head) }}
      {{- with $v.serving.probes.readiness }}
      {{- if .enabled }}
      readinessProbe:
        httpGet:
          path: {{ .path }}
          port: serve
        periodSeconds: {{ .periodSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- with $v.serving.probes.liveness }}
      {{- if .enabled }}
      livenessProbe:
        httpGet:
          path: {{ .path }}
          port: serve
        initialDelaySeconds: {{ .initialDelaySeconds }}
        periodSeconds: {{ .periodSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- end }}
      resources:
        {{- include "recsys.rayResources" (dict "resources" .resources "gpus" (default 0 .gpus)) | nindent 8 }}
      securityContext:
        {{- toYaml $v.containerSecurityContext | nindent 8 }}
      volumeMounts:
        {{- include "recsys.commonVolumeMounts" $ctx | nindent 8 }}
        {{- if .serving }}
        - name: experiments
          mountPath: {{ $v.experiments.mountPath }}
          readOnly: true
        {{- with include "recsys.experimentsStateMount" (dict "ctx" $ctx "readOnly" false) }}{{ . | trim | nindent 8 }}{{ end }}
        {{- end }}
  volumes:
    {{- include "recsys.commonVolumes" $ctx | nindent 4 }}
    {{- if .serving }}
    - name: experiments
      configMap:
        name: {{ include "recsys.fullname" $ctx }}-experiments
    {{- with include "recsys.experimentsStateVolume" $ctx }}{{ . | trim | nindent 4 }}{{ end }}
    {{- end }}
{{- end }}

{{/* A CPU quantity ("2", 2, "1.5", "500m") as a number of CPUs. */}}
{{- define "recsys.cpuCount" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q }}{{ divf (trimSuffix "m" $q | float64) 1000 }}{{ else }}{{ $q | float64 }}{{ end }}
{{- end }}

{{/*
Ray Train sizing of one training job, as "numWorkers cpusPerWorker podCpus workersPerPod" (space separated).
One Ray Train worker per worker pod, or one per GPU when pods have several; each worker reserves the pod's
CPUs (limit, else request) divided among the workers of that pod. numWorkers/cpusPerWorker override (0: derive).
Ray Train's controller needs no CPU, so it fits on the head (num-cpus 0).
*/}}
{{- define "recsys.training.sizing" -}}
{{- $w := .workers -}}
{{- $res := default dict $w.resources -}}
{{- $cpu := coalesce (default dict $res.limits).cpu (default dict $res.requests).cpu -}}
{{- if not $cpu }}{{ fail (printf "training.jobs.%s.workers.resources needs a cpu limit or request (it sizes --cpus-per-worker)" .name) }}{{ end -}}
{{- $podCpus := include "recsys.cpuCount" $cpu | float64 -}}
{{- $perPod := max 1 (int $w.gpus) -}}
{{- $num := int $w.numWorkers | default (mul (int $w.replicas) $perPod) | max 1 -}}
{{- $cpus := float64 $w.cpusPerWorker | default (divf $podCpus $perPod) -}}
{{- printf "%d %v %v %d" $num $cpus $podCpus $perPod -}}
{{- end }}

{{/*
Entrypoint of a training job: the command, the scale-out flags of `recsys train` (from the values) and the
job's extra args last (click keeps the last occurrence, so args can still override a flag).
*/}}
{{- define "recsys.training.entrypoint" -}}
{{- $t := .ctx.Values.training -}}
{{- $sizing := splitList " " (include "recsys.training.sizing" (dict "name" .name "workers" .job.workers)) -}}
{{- $flags := list .job.command "--num-workers" (index $sizing 0) "--cpus-per-worker" (index $sizing 1) -}}
{{- if gt (int .job.workers.gpus) 0 }}{{- $flags = append $flags "--use-gpu" -}}{{- end }}
{{- with $t.storagePath }}{{- $flags = concat $flags (list "--storage-path" .) -}}{{- end }}
{{- with $t.datasetUri }}{{- $flags = concat $flags (list "--dataset-uri" .) -}}{{- end }}
{{- range .job.args }}{{- $flags = append $flags (toString .) -}}{{- end }}
{{- join " " $flags -}}
{{- end }}

{{/*
A training RayJob. Args (dict): ctx, name (job key), job (values of the job), generateName (bool).
With generateName the object gets a fresh name per submission (used by the schedule and the CLI).
*/}}
{{- define "recsys.training.rayJob" -}}
{{- $ctx := .ctx -}}
{{- $t := $ctx.Values.training -}}
{{- $job := .job -}}
{{- $jobLabel := dict "recsys.io/training-job" .name -}}
{{- $base := printf "%s-train-%s" (include "recsys.fullname" $ctx) .name | trunc 40 | trimSuffix "-" -}}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  {{- if .generateName }}
  generateName: {{ $base }}-
  {{- else }}
  name: {{ $base }}
  {{- end }}
  labels:
    {{- include "recsys.componentLabels" (dict "ctx" $ctx "component" "training") | nindent 4 }}
    recsys.io/training-job: {{ .name }}
spec:
  entrypoint: {{ include "recsys.training.entrypoint" . | quote }}
  shutdownAfterJobFinishes: {{ $t.shutdownAfterJobFinishes }}
  ttlSecondsAfterFinished: {{ $t.ttlSecondsAfterFinished }}
  activeDeadlineSeconds: {{ $t.activeDeadlineSeconds }}
  backoffLimit: {{ $t.backoffLimit }}
  submissionMode: K8sJobMode
  submitterPodTemplate:
    metadata:
      labels:
        {{- include "recsys.componentLabels" (dict "ctx" $ctx "component" "training") | nindent 8 }}
        recsys.io/training-job: {{ .name }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "recsys.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $ctx.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: ray-job-submitter
          image: {{ include "recsys.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          env:
            - name: HOME
              value: /tmp
          resources:
            requests: {cpu: 100m, memory: 256Mi}
            limits: {cpu: "1", memory: 1Gi}
          securityContext:
            {{- toYaml $ctx.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir: {}
  rayClusterSpec:
    rayVersion: {{ $t.rayVersion | quote }}
    enableInTreeAutoscaling: {{ $t.autoscaler.enabled }}
    {{- if $t.autoscaler.enabled }}
    autoscalerOptions:
      idleTimeoutSeconds: {{ $t.autoscaler.idleTimeoutSeconds }}
      upscalingMode: {{ $t.autoscaler.upscalingMode }}
      securityContext:
        {{- toYaml $ctx.Values.containerSecurityContext | nindent 8 }}
    {{- end }}
    headGroupSpec:
      rayStartParams:
        {{- toYaml $t.head.rayStartParams | nindent 8 }}
      template:
        {{- include "recsys.rayPodTemplate" (dict "ctx" $ctx "component" "training" "extraLabels" $jobLabel "resources" $t.head.resources "head" true) | nindent 8 }}
    workerGroupSpecs:
      - groupName: {{ $job.workers.groupName }}
        replicas: {{ $job.workers.replicas }}
        minReplicas: {{ $job.workers.minReplicas }}
        maxReplicas: {{ $job.workers.maxReplicas }}
        rayStartParams: {}
        template:
          {{- include "recsys.rayPodTemplate" (dict "ctx" $ctx "component" "training" "extraLabels" $jobLabel "resources" $job.workers.resources "gpus" $job.workers.gpus "nodeSelector" $job.workers.nodeSelector "tolerations" $job.workers.tolerations) | nindent 10 }}
{{- end }}

{{/* Env of Feast containers: the common env plus the Redis connection string Feast's config expands. */}}
{{- define "recsys.feastEnv" -}}
{{ include "recsys.commonEnv" . }}
- name: REDIS_CONNECTION_STRING
  valueFrom:
    secretKeyRef:
      name: {{ include "recsys.redisSecretName" . }}
      key: {{ .Values.redis.urlSecret.feastConnectionKey }}
- name: FEAST_REPO_PATH
  value: /etc/feast
{{- end }}

{{/*
apiVersion of a built-in kind whose GA version arrived after Kubernetes 1.20, chosen the way widely used
charts do: the GA version when the server serves it (`.Capabilities.APIVersions.Has "<group/version>/<Kind>"`,
which `helm install/upgrade` fills from the live server) or when the Kubernetes version says it must exist
(`helm template` only knows group/versions, not kinds, and defaults to a current Kubernetes); otherwise the
beta version. Args (dict): ctx, kind, ga, beta, since (first Kubernetes minor serving ga, e.g. "1.21").
*/}}
{{- define "recsys.apiVersionFor" -}}
{{- $caps := .ctx.Capabilities -}}
{{- if or ($caps.APIVersions.Has (printf "%s/%s" .ga .kind)) (semverCompare (printf ">=%s-0" .since) $caps.KubeVersion.Version) -}}
{{- .ga -}}
{{- else -}}
{{- .beta -}}
{{- end -}}
{{- end }}

{{- define "recsys.cronJobApiVersion" -}}
{{- include "recsys.apiVersionFor" (dict "ctx" . "kind" "CronJob" "ga" "batch/v1" "beta" "batch/v1beta1" "since" "1.21") -}}
{{- end }}

{{- define "recsys.pdbApiVersion" -}}
{{- include "recsys.apiVersionFor" (dict "ctx" . "kind" "PodDisruptionBudget" "ga" "policy/v1" "beta" "policy/v1beta1" "since" "1.21") -}}
{{- end }}

{{- define "recsys.hpaApiVersion" -}}
{{- include "recsys.apiVersionFor" (dict "ctx" . "kind" "HorizontalPodAutoscaler" "ga" "autoscaling/v2" "beta" "autoscaling/v2beta2" "since" "1.23") -}}
{{- end }}

{{/*
Schedule and time zone of a CronJob: include "recsys.cronSchedule" (dict "ctx" $ "cron" "0 3 * * *" "timeZone" "Etc/UTC").
`spec.timeZone` exists from Kubernetes 1.25 (GA 1.27); older API servers reject the unknown field under
server-side apply and their cron parser knows no CRON_TZ= prefix either. There the schedule runs in the
kube-controller-manager's zone (UTC on managed clusters) and the wanted zone is kept in an annotation
(the chart's NOTES print a warning), so nothing is silently reinterpreted without a trace.
*/}}
{{- define "recsys.cronSchedule" -}}
schedule: {{ .cron | quote }}
{{- if semverCompare ">=1.25-0" .ctx.Capabilities.KubeVersion.Version }}
timeZone: {{ .timeZone | quote }}
{{- end }}
{{- end }}

{{/* Annotation naming the time zone a CronJob could not set (Kubernetes < 1.25); empty otherwise. */}}
{{- define "recsys.cronTimeZoneAnnotation" -}}
{{- if not (semverCompare ">=1.25-0" .ctx.Capabilities.KubeVersion.Version) }}
recsys.io/schedule-time-zone: {{ printf "%s (not applied: Kubernetes %s has no CronJob timeZone; the schedule runs in the controller-manager's zone)" .timeZone .ctx.Capabilities.KubeVersion.Version | quote }}
{{- end }}
{{- end }}

{{/*
Redis maxmemory of the in-chart Redis: redis.internal.maxMemory when set, else maxMemoryPercent of the
container's memory limit (so Redis refuses writes - the API answers 503 + Retry-After - before the kernel
OOM-kills the pod; the rest of the limit covers fork/AOF rewrite, buffers and fragmentation). Empty when
neither is set (unbounded; not recommended).
*/}}
{{- define "recsys.redisMaxMemory" -}}
{{- $r := .Values.redis.internal -}}
{{- if $r.maxMemory -}}
{{- $r.maxMemory -}}
{{- else -}}
{{- $lim := toString (dig "limits" "memory" "" ($r.resources | default dict)) -}}
{{- if $lim -}}
{{- $units := dict "" 1 "k" 1000 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- $num := regexFind "^[0-9]+" $lim -}}
{{- $unit := trimPrefix $num $lim -}}
{{- if or (not $num) (not (hasKey $units $unit)) -}}
{{- fail (printf "redis.internal.resources.limits.memory %q: cannot derive maxmemory from it (use an integer with Ki/Mi/Gi/Ti/k/M/G/T) - or set redis.internal.maxMemory" $lim) -}}
{{- end -}}
{{- div (mul (int64 $num) (int64 (get $units $unit)) (int64 $r.maxMemoryPercent)) 100 | toString -}}
{{- end -}}
{{- end -}}
{{- end -}}
