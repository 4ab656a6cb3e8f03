{% comment %}
Processed by Liquid, unlike the other templates: the helpers are named after the chart,
as `helm create` names them, so that charts generated from this template can be
subcharts of one umbrella chart. Everything else is Helm's own, inside raw blocks; the
templates call the helpers by `$.Chart.Name`.
{% endcomment %}{% raw %}{{/*
Names and labels, as `helm create` makes them.
*/}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.name" -}}{% raw %}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.fullname" -}}{% raw %}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.chart" -}}{% raw %}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.selectorLabels" -}}{% raw %}
app.kubernetes.io/name: {{ include (print $.Chart.Name ".name") . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.chartLabels" -}}{% raw %}
helm.sh/chart: {{ include (print $.Chart.Name ".chart") . }}
{{ include (print $.Chart.Name ".selectorLabels") . }}
app.kubernetes.io/version: {{ include (print $.Chart.Name ".versionLabel") . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels of every object: the chart's, then commonLabels (validateValues keeps them apart). */}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.labels" -}}{% raw %}
{{- include (print $.Chart.Name ".chartLabels") . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
An object's `annotations:`, indented for its metadata: its own (the second argument), then
commonAnnotations for the keys it does not set; nothing when both are empty. Called with
(list $ .Values.x.annotations) right after the metadata's labels.
*/}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.annotations" -}}{% raw %}
{{- $root := index . 0 }}
{{- $annotations := merge (dict) (index . 1 | default dict) $root.Values.commonAnnotations }}
{{- with $annotations }}
{{- printf "\n  annotations:\n%s" (toYaml . | indent 4) }}
{{- end }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.imageTag" -}}{% raw %}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The image tag as a label value: a digest (`1.2.3@sha256:…`) is cut off and build metadata's
`+` becomes `_`, so that the label is valid whatever the tag (at most 63 characters of
letters, digits, `-`, `_` and `.`, beginning and ending with a letter or digit).
*/}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.versionLabel" -}}{% raw %}
{{- $tag := include (print $.Chart.Name ".imageTag") . | splitList "@" | first }}
{{- regexReplaceAll "[^A-Za-z0-9._-]" $tag "_" | trunc 63 | trimAll "-_." }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.image" -}}{% raw %}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include (print $.Chart.Name ".imageTag") .) }}
{{- end }}
{{- end }}

{{/*
"true" when the pod has a native sidecar: one from `sidecars`, or an init container with
`restartPolicy: Always` written in `initContainers`. The kubelet stops sidecars after the
service has exited, so their stop time joins the shutdown budget.
*/}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.hasSidecars" -}}{% raw %}
{{- $found := gt (len .Values.sidecars) 0 }}
{{- range .Values.initContainers }}
{{- if eq (toString .restartPolicy) "Always" }}{{ $found = true }}{{ end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}

{{/* The seconds sidecars get after the service has exited: 0 without sidecars. */}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.sidecarStopSeconds" -}}{% raw %}
{{- if include (print $.Chart.Name ".hasSidecars") . }}{{ int .Values.shutdown.sidecarStopSeconds }}{{ else }}0{{ end }}
{{- end }}

{{/* A Prometheus duration (`500ms`, `15s`, `1m`, `1h`) in milliseconds. */}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.durationMilliseconds" -}}{% raw %}
{{- $count := regexFind "^[0-9]+" . | int }}
{{- $unit := regexReplaceAll "^[0-9]+" . "" }}
{{- $factor := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit | default 1000 }}
{{- mul $count $factor }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.serviceAccountName" -}}{% raw %}
{{- if .Values.serviceAccount.create }}
{{- default (include (print $.Chart.Name ".fullname") .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
How long the admin port stays up after cleanup, for Prometheus to read the final
counters: one scrape interval (metrics.podMonitor.interval, rounded up to whole seconds)
plus 2 s for the scrape itself, unless shutdown.metricsLingerSeconds says otherwise. The
service stops waiting as soon as every recent scraper has read them.
*/}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.metricsLingerSeconds" -}}{% raw %}
{{- $s := .Values.shutdown }}
{{- if kindIs "invalid" $s.metricsLingerSeconds }}
{{- $interval := .Values.metrics.podMonitor.interval }}
{{- $seconds := div (add (include (print $.Chart.Name ".durationMilliseconds") $interval | int) 999) 1000 }}
{{- if gt (add $seconds 2) 3600 }}
{{- fail (printf "\n\nmetrics.podMonitor.interval (%s) would make the metrics linger %d s, longer than the 3600 s the service accepts. Set shutdown.metricsLingerSeconds (0 turns the linger off), or scrape more often." $interval (add $seconds 2)) }}
{{- end }}
{{- add $seconds 2 }}
{{- else }}
{{- int $s.metricsLingerSeconds }}
{{- end }}
{{- end }}

{{/*
The shutdown budget. The kubelet counts terminationGracePeriodSeconds from the pod's
deletion: it runs the preStop hook (preStopDelaySeconds), then sends SIGTERM, after which
the service drains and finishes requests (timeoutSeconds, which includes drainDelaySeconds),
cleans up (cleanupTimeoutSeconds) and lets Prometheus read its final counters (the metrics
linger); then native sidecars stop (sidecarStopSeconds, only when there is one). The margin
covers process exit and scheduling jitter.
*/}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.shutdownBudgetSeconds" -}}{% raw %}
{{- $s := .Values.shutdown }}
{{- $linger := include (print $.Chart.Name ".metricsLingerSeconds") . | int }}
{{- $sidecars := include (print $.Chart.Name ".sidecarStopSeconds") . | int }}
{{- add (int $s.preStopDelaySeconds) (int $s.timeoutSeconds) (int $s.cleanupTimeoutSeconds) $linger $sidecars (int $s.marginSeconds) }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.budgetArithmetic" -}}{% raw %}
{{- $s := .Values.shutdown }}
{{- $linger := include (print $.Chart.Name ".metricsLingerSeconds") . | int }}
{{- $sidecars := "" }}
{{- if include (print $.Chart.Name ".hasSidecars") . }}
{{- $sidecars = printf " + sidecarStopSeconds (%d)" (int $s.sidecarStopSeconds) }}
{{- end }}
{{- printf "preStopDelaySeconds (%d) + timeoutSeconds (%d) + cleanupTimeoutSeconds (%d) + metricsLingerSeconds (%d)%s + marginSeconds (%d) = %s" (int $s.preStopDelaySeconds) (int $s.timeoutSeconds) (int $s.cleanupTimeoutSeconds) $linger $sidecars (int $s.marginSeconds) (include (print $.Chart.Name ".shutdownBudgetSeconds") .) }}
{{- end }}

{{/* terminationGracePeriodSeconds: computed from the budget, or an explicit value that covers it. */}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.terminationGracePeriodSeconds" -}}{% raw %}
{{- $s := .Values.shutdown }}
{{- $budget := include (print $.Chart.Name ".shutdownBudgetSeconds") . | int }}
{{- if ge (int $s.drainDelaySeconds) (int $s.timeoutSeconds) }}
{{- fail (printf "\n\nshutdown.drainDelaySeconds (%d) must be shorter than shutdown.timeoutSeconds (%d): the timeout counts from SIGTERM and includes the drain delay, so in-flight requests would get no time to finish. Lower shutdown.drainDelaySeconds or raise shutdown.timeoutSeconds." (int $s.drainDelaySeconds) (int $s.timeoutSeconds)) }}
{{- end }}
{{- if kindIs "invalid" $s.terminationGracePeriodSeconds }}
{{- $budget }}
{{- else if lt (int $s.terminationGracePeriodSeconds) $budget }}
{{- fail (printf "\n\nshutdown.terminationGracePeriodSeconds (%d) is shorter than the shutdown budget:\n  %s\nThe kubelet would SIGKILL the pod before it finished draining. Set shutdown.terminationGracePeriodSeconds to at least %d (or remove it to have it computed), or lower shutdown.preStopDelaySeconds, shutdown.timeoutSeconds, shutdown.cleanupTimeoutSeconds, shutdown.metricsLingerSeconds, shutdown.sidecarStopSeconds or shutdown.marginSeconds." (int $s.terminationGracePeriodSeconds) (include (print $.Chart.Name ".budgetArithmetic") .) $budget) }}
{{- else }}
{{- int $s.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The preStop hook: the kubelet's native sleep (Kubernetes 1.30+) or GET /prestop. */}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.preStopMode" -}}{% raw %}
{{- $mode := .Values.shutdown.preStop.mode }}
{{- if eq $mode "auto" }}
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}sleep{{ else }}httpGet{{ end }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/* "true" when an optional Prometheus Operator object is on: asked for, or "auto" and the API exists. */}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.enabledOrDetected" -}}{% raw %}
{{- $enabled := index . 0 }}
{{- $api := index . 1 }}
{{- $root := index . 2 }}
{{- if eq (toString $enabled) "auto" }}
{{- if $root.Capabilities.APIVersions.Has $api }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{% endraw %}{{ "{{" }}- define "{{project-name}}.podDisruptionBudgetEnabled" -}}{% raw %}
{{- $enabled := .Values.podDisruptionBudget.enabled }}
{{- if eq (toString $enabled) "auto" }}
{{- if or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) 1)) }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{/* OpenTelemetry resource attributes: the pod's identity from the downward API, then extras. */}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.otelResourceAttributes" -}}{% raw %}
{{- $attributes := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" (printf "k8s.deployment.name=%s" (include (print $.Chart.Name ".fullname") .)) }}
{{- range $key, $value := .Values.otel.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $attributes }}
{{- end }}

{{/*
Values the schema cannot check alone, each refused with the value to change (as Bitnami's
charts do in validateValues); every message is collected, then the render fails once.
*/}}
{% endraw %}{{ "{{" }}- define "{{project-name}}.validateValues" -}}{% raw %}
{{- $messages := list }}
{{- if eq (int .Values.ports.http) (int .Values.ports.admin) }}
{{- $messages = append $messages (printf "ports.admin (%d) equals ports.http: the admin port (probes, metrics, /prestop) must be separate from application traffic. Change ports.admin or ports.http." (int .Values.ports.admin)) }}
{{- end }}
{{- $derived := dict "HTTP_ADDR" "ports.http" "ADMIN_ADDR" "ports.admin" "PRESTOP_DELAY" "shutdown.preStopDelaySeconds" "SHUTDOWN_DRAIN_DELAY" "shutdown.drainDelaySeconds" "SHUTDOWN_TIMEOUT" "shutdown.timeoutSeconds" "SHUTDOWN_CLEANUP_TIMEOUT" "shutdown.cleanupTimeoutSeconds" "SHUTDOWN_METRICS_LINGER" "shutdown.metricsLingerSeconds" "LOG_FORMAT" "nothing: the chart always logs JSON" "RUST_LOG" "logLevel" "KUBE_INTEGRATION" "kube.enabled" "POD_NAME" "nothing: it comes from the downward API" "POD_NAMESPACE" "nothing: it comes from the downward API" "NODE_NAME" "nothing: it comes from the downward API" "POD_UID" "nothing: it comes from the downward API" "CONTAINER_NAME" "nothing: it is the container's name" "OTEL_EXPORTER_OTLP_ENDPOINT" "otel.endpoint" "OTEL_SERVICE_NAME" "otel.serviceName" "OTEL_RESOURCE_ATTRIBUTES" "otel.resourceAttributes" }}
{{- range $index, $env := .Values.extraEnv }}
{{- $name := $env.name | toString }}
{{- if hasKey $derived $name }}
{{- $messages = append $messages (printf "extraEnv[%d] sets %s, which the chart derives (so that the grace period, the probes and the service agree). Remove it from extraEnv and set %s instead." $index $name (get $derived $name)) }}
{{- end }}
{{- end }}
{{- $chartLabels := include (print $.Chart.Name ".chartLabels") . | fromYaml }}
{{- range $key, $value := .Values.podLabels }}
{{- if hasKey $chartLabels $key }}
{{- $messages = append $messages (printf "podLabels sets %s, a label the chart sets itself (the selector of the Deployment, the Service and the PodDisruptionBudget among them). Remove %s from podLabels." $key $key) }}
{{- else if hasKey $.Values.commonLabels $key }}
{{- $messages = append $messages (printf "podLabels and commonLabels both set %s. Keep it in one of them." $key) }}
{{- end }}
{{- end }}
{{- range $key, $value := .Values.commonLabels }}
{{- if hasKey $chartLabels $key }}
{{- $messages = append $messages (printf "commonLabels sets %s, a label the chart sets itself (the selectors depend on it). Remove %s from commonLabels." $key $key) }}
{{- end }}
{{- end }}
{{- $appName := include (print $.Chart.Name ".name") . }}
{{- range $list := list "initContainers" "sidecars" }}
{{- range $index, $container := get $.Values $list }}
{{- if eq (toString $container.name) $appName }}
{{- $messages = append $messages (printf "%s[%d] is named %s, the name of the service's own container. Rename it." $list $index $appName) }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.tmpDir.enabled }}
{{- range $index, $volume := .Values.volumes }}
{{- if eq (toString $volume.name) "tmp" }}
{{- $messages = append $messages (printf "volumes[%d] is named tmp, the volume the chart mounts at /tmp. Rename it, or set tmpDir.enabled to false to bring your own /tmp." $index) }}
{{- end }}
{{- end }}
{{- range $index, $mount := .Values.volumeMounts }}
{{- if eq (clean (toString $mount.mountPath)) "/tmp" }}
{{- $messages = append $messages (printf "volumeMounts[%d] mounts at /tmp, where the chart mounts its own emptyDir. Set tmpDir.enabled to false to bring your own /tmp." $index) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.metrics.podMonitor }}
{{- if and .scrapeTimeout (gt (include (print $.Chart.Name ".durationMilliseconds") .scrapeTimeout | int) (include (print $.Chart.Name ".durationMilliseconds") .interval | int)) }}
{{- $messages = append $messages (printf "metrics.podMonitor.scrapeTimeout (%s) is longer than metrics.podMonitor.interval (%s); Prometheus refuses such a scrape. Lower metrics.podMonitor.scrapeTimeout or raise metrics.podMonitor.interval." .scrapeTimeout .interval) }}
{{- end }}
{{- end }}
{{- with .Values.autoscaling }}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) }}
{{- $messages = append $messages (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d). Lower autoscaling.minReplicas or raise autoscaling.maxReplicas." (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- end }}
{{- if $messages }}
{{- fail (printf "\n\n%s" (join "\n" $messages)) }}
{{- end }}
{{- end }}{% endraw %}
