{{/*
Names and labels, as `helm create` makes them.
*/}}
{{- define "service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "service.fullname" -}}
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

{{- define "service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "service.labels" -}}
helm.sh/chart: {{ include "service.chart" . }}
{{ include "service.selectorLabels" . }}
app.kubernetes.io/version: {{ include "service.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "service.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "service.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "service.imageTag" .) }}
{{- end }}

{{- define "service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The shutdown budget. The kubelet counts terminationGracePeriodSeconds from the pod's
deletion: it runs the preStop hook (preStopDelaySeconds), then sends SIGTERM, after which
the service drains and finishes requests (timeoutSeconds, which includes drainDelaySeconds)
and cleans up (cleanupTimeoutSeconds). The margin covers process exit and scheduling jitter.
*/}}
{{- define "service.shutdownBudgetSeconds" -}}
{{- $s := .Values.shutdown }}
{{- add (int $s.preStopDelaySeconds) (int $s.timeoutSeconds) (int $s.cleanupTimeoutSeconds) (int $s.marginSeconds) }}
{{- end }}

{{- define "service.budgetArithmetic" -}}
{{- $s := .Values.shutdown }}
{{- printf "preStopDelaySeconds (%d) + timeoutSeconds (%d) + cleanupTimeoutSeconds (%d) + marginSeconds (%d) = %s" (int $s.preStopDelaySeconds) (int $s.timeoutSeconds) (int $s.cleanupTimeoutSeconds) (int $s.marginSeconds) (include "service.shutdownBudgetSeconds" .) }}
{{- end }}

{{/* terminationGracePeriodSeconds: computed from the budget, or an explicit value that covers it. */}}
{{- define "service.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown }}
{{- $budget := include "service.shutdownBudgetSeconds" . | int }}
{{- if ge (int $s.drainDelaySeconds) (int $s.timeoutSeconds) }}
{{- fail (printf "\n\nshutdown.drainDelaySeconds (%d) must be shorter than shutdown.timeoutSeconds (%d): the timeout counts from SIGTERM and includes the drain delay, so in-flight requests would get no time to finish. Lower shutdown.drainDelaySeconds or raise shutdown.timeoutSeconds." (int $s.drainDelaySeconds) (int $s.timeoutSeconds)) }}
{{- end }}
{{- if kindIs "invalid" $s.terminationGracePeriodSeconds }}
{{- $budget }}
{{- else if lt (int $s.terminationGracePeriodSeconds) $budget }}
{{- fail (printf "\n\nshutdown.terminationGracePeriodSeconds (%d) is shorter than the shutdown budget:\n  %s\nThe kubelet would SIGKILL the pod before it finished draining. Set shutdown.terminationGracePeriodSeconds to at least %d (or remove it to have it computed), or lower shutdown.preStopDelaySeconds, shutdown.timeoutSeconds, shutdown.cleanupTimeoutSeconds or shutdown.marginSeconds." (int $s.terminationGracePeriodSeconds) (include "service.budgetArithmetic" .) $budget) }}
{{- else }}
{{- int $s.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The preStop hook: the kubelet's native sleep (Kubernetes 1.30+) or GET /prestop. */}}
{{- define "service.preStopMode" -}}
{{- $mode := .Values.shutdown.preStop.mode }}
{{- if eq $mode "auto" }}
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}sleep{{ else }}httpGet{{ end }}
{{- else }}
{{- $mode }}
{{- end }}
{{- end }}

{{/* "true" when an optional Prometheus Operator object is on: asked for, or "auto" and the API exists. */}}
{{- define "service.enabledOrDetected" -}}
{{- $enabled := index . 0 }}
{{- $api := index . 1 }}
{{- $root := index . 2 }}
{{- if eq (toString $enabled) "auto" }}
{{- if $root.Capabilities.APIVersions.Has $api }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{- define "service.podDisruptionBudgetEnabled" -}}
{{- $enabled := .Values.podDisruptionBudget.enabled }}
{{- if eq (toString $enabled) "auto" }}
{{- if or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) 1)) }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{/* OpenTelemetry resource attributes: the pod's identity from the downward API, then extras. */}}
{{- define "service.otelResourceAttributes" -}}
{{- $attributes := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(NODE_NAME)" (printf "k8s.deployment.name=%s" (include "service.fullname" .)) }}
{{- range $key, $value := .Values.otel.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $attributes }}
{{- end }}
