{{/*
Names, labels and the operator's RBAC rules: every template takes them from here, so the
app.kubernetes.io/* labels are the same on every object and the rules live in one place.
*/}}

{{- define "agentgov.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-agentgov, or the release name when it already contains the chart name. */}}
{{- define "agentgov.fullname" -}}
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

{{- define "agentgov.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object carries. */}}
{{- define "agentgov.labels" -}}
helm.sh/chart: {{ include "agentgov.chart" . }}
app.kubernetes.io/name: {{ include "agentgov.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: agentgov
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's labels, and the subset that selects its pods (stable across upgrades). */}}
{{- define "agentgov.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentgov.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "agentgov.operatorLabels" -}}
{{ include "agentgov.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "agentgov.crdLabels" -}}
{{ include "agentgov.labels" . }}
app.kubernetes.io/component: crds
{{- end }}

{{- define "agentgov.monitoringLabels" -}}
{{ include "agentgov.labels" . }}
app.kubernetes.io/component: monitoring
{{- end }}

{{/* The bundled Redis: its own name label, so the operator's default selector finds it. */}}
{{- define "agentgov.redis.fullname" -}}
{{- printf "%s-redis" (include "agentgov.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentgov.redis.selectorLabels" -}}
app.kubernetes.io/name: redis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: budget-store
{{- end }}

{{- define "agentgov.redis.labels" -}}
helm.sh/chart: {{ include "agentgov.chart" . }}
{{ include "agentgov.redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.redis.bundled.image.tag | quote }}
app.kubernetes.io/part-of: agentgov
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* redis://<service>.<namespace>.svc.<domain>:<port>/0 of the bundled Redis. */}}
{{- define "agentgov.redis.url" -}}
{{- printf "redis://%s.%s.svc.%s:%d/0" (include "agentgov.redis.fullname" .) .Release.Namespace .Values.config.clusterDomain (int .Values.redis.port) }}
{{- end }}

{{/* Namespaces that get the sidecars' Redis Secret (bundled Redis only). */}}
{{- define "agentgov.redis.agentNamespaces" -}}
{{- $namespaces := .Values.redis.agentNamespaces | default .Values.watchNamespaces }}
{{- join "," (uniq $namespaces) }}
{{- end }}

{{- define "agentgov.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentgov.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest, or repository:tag (tag defaulting to the appVersion). */}}
{{- define "agentgov.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "agentgov.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/*
The operator's RBAC rules: exactly the calls it makes, no wildcards. tests/unit/test_rbac.py
derives the same set from the code (the kinds the builders write, kube.py calls, kopf's
handlers and kopf's own needs) and fails on any difference.

Namespaced rules: cluster-wide in the ClusterRole, or in a Role per watched namespace.
*/}}
{{- define "agentgov.rules.namespaced" -}}
# The four resources: kopf watches them; it patches the two with create/update/resume
# handlers or timers (annotations, finalizer); the handlers read them and write their status.
- apiGroups: [agentgov.io]
  resources: [agentdeployments, agentbudgets]
  verbs: [get, list, watch, patch]
- apiGroups: [agentgov.io]
  resources: [toolpolicies, regionpolicies]
  verbs: [get, list, watch]
- apiGroups: [agentgov.io]
  resources: [agentdeployments/status, agentbudgets/status, toolpolicies/status, regionpolicies/status]
  verbs: [patch]
# An agent's children (builders): created, compared and patched; the optional ones
# (NetworkPolicy, PDB, HPA, Ingress) deleted when the spec drops them.
- apiGroups: [""]
  resources: [configmaps, serviceaccounts, services]
  verbs: [get, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, networkpolicies]
  verbs: [get, create, patch, delete]
# The Secrets an agent references: read for their resourceVersion (a change rolls the pods).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events: Reconciled, Stalled reasons, budget alerts, kopf's handler errors.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if include "agentgov.peering" . }}
{{- if .Values.watchNamespaces }}
# kopf peering between the replicas, in each watched namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}
{{- end }}

{{/* Cluster-scoped rules: kopf's discovery of CRDs, and of namespaces when it watches a list. */}}
{{- define "agentgov.rules.cluster" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- else if include "agentgov.peering" . }}
# kopf peering between the replicas, cluster-wide.
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}
