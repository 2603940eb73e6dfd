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
# The Secrets an agent references: read for their resourceVersion (a change rolls the pods);
# <agent>-secrets, the values of its Vault/AWS/Azure secrets: created and patched by the sync.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
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

{{/*
Secret providers (secretProviders): the operator's AGENTGOV_VAULT_, _AWS_ and _AZURE_ variables and
the Secrets it mounts as credential files. Credentials are only ever files from a Secret of the
release namespace (or workload identity); never an environment value. Each mounted Secret is a
(volume, Secret, key, file) row, so env, volumes and mounts come from one list.
*/}}
{{- define "agentgov.providerFiles" -}}
{{- $p := .Values.secretProviders }}
{{- $rows := list }}
{{- if and $p.vault.address $p.vault.tokenSecret.name }}
{{- $rows = append $rows (list "vault-token" $p.vault.tokenSecret.name $p.vault.tokenSecret.key "AGENTGOV_VAULT_TOKEN_FILE") }}
{{- end }}
{{- if and $p.vault.address $p.vault.caSecret.name }}
{{- $rows = append $rows (list "vault-ca" $p.vault.caSecret.name $p.vault.caSecret.key "AGENTGOV_VAULT_CA_FILE") }}
{{- end }}
{{- if and $p.aws.region $p.aws.credentialsSecret.name }}
{{- $rows = append $rows (list "aws-credentials" $p.aws.credentialsSecret.name $p.aws.credentialsSecret.key "AGENTGOV_AWS_CREDENTIALS_FILE") }}
{{- end }}
{{- if and $p.azure.credential $p.azure.clientSecretSecret.name }}
{{- $rows = append $rows (list "azure-client-secret" $p.azure.clientSecretSecret.name $p.azure.clientSecretSecret.key "AGENTGOV_AZURE_CLIENT_SECRET_FILE") }}
{{- end }}
{{- if and $p.azure.credential $p.azure.caSecret.name }}
{{- $rows = append $rows (list "azure-ca" $p.azure.caSecret.name $p.azure.caSecret.key "AGENTGOV_AZURE_CA_FILE") }}
{{- end }}
{{- toJson $rows }}
{{- end }}

{{/* Where a provider's credential file is mounted: one folder per mounted Secret. */}}
{{- define "agentgov.providerFilePath" -}}
/etc/agentgov/providers/{{ index . 0 }}/{{ index . 2 }}
{{- end }}

{{- define "agentgov.providerEnv" -}}
{{- $p := .Values.secretProviders }}
- name: AGENTGOV_SECRETS_TIMEOUT_SECONDS
  value: {{ $p.timeoutSeconds | quote }}
{{- with $p.vault }}
{{- if .address }}
{{- if and (eq .auth "kubernetes") (not .role) }}
{{- fail "secretProviders.vault.role is required with secretProviders.vault.auth=kubernetes: the Vault role bound to the operator's service account" }}
{{- end }}
{{- if and (eq .auth "token") (not .tokenSecret.name) }}
{{- fail "secretProviders.vault.tokenSecret.name is required with secretProviders.vault.auth=token: a Secret holding the token" }}
{{- end }}
- name: AGENTGOV_VAULT_ADDR
  value: {{ .address | quote }}
- name: AGENTGOV_VAULT_MOUNT
  value: {{ .mount | quote }}
{{- with .namespace }}
- name: AGENTGOV_VAULT_NAMESPACE
  value: {{ . | quote }}
{{- end }}
- name: AGENTGOV_VAULT_AUTH
  value: {{ .auth | quote }}
{{- with .role }}
- name: AGENTGOV_VAULT_ROLE
  value: {{ . | quote }}
{{- end }}
- name: AGENTGOV_VAULT_AUTH_MOUNT
  value: {{ .authMount | quote }}
{{- end }}
{{- end }}
{{- with $p.aws }}
{{- if .region }}
- name: AGENTGOV_AWS_REGION
  value: {{ .region | quote }}
{{- with .endpointUrl }}
- name: AGENTGOV_AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with $p.azure }}
{{- if .credential }}
{{- if and (eq .credential "client_secret") (not (and .tenantId .clientId .clientSecretSecret.name)) }}
{{- fail "secretProviders.azure.credential=client_secret needs secretProviders.azure.tenantId, clientId and clientSecretSecret.name" }}
{{- end }}
- name: AGENTGOV_AZURE_CREDENTIAL
  value: {{ .credential | quote }}
- name: AGENTGOV_AZURE_VAULT_URL_TEMPLATE
  value: {{ .vaultUrlTemplate | quote }}
{{- with .tenantId }}
- name: AGENTGOV_AZURE_TENANT_ID
  value: {{ . | quote }}
{{- end }}
{{- with .clientId }}
- name: AGENTGOV_AZURE_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- with .authority }}
- name: AGENTGOV_AZURE_AUTHORITY
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range (include "agentgov.providerFiles" . | fromJsonArray) }}
- name: {{ index . 3 }}
  value: {{ include "agentgov.providerFilePath" . | quote }}
{{- end }}
{{- end }}

{{- define "agentgov.providerMounts" -}}
{{- range (include "agentgov.providerFiles" . | fromJsonArray) }}
- name: {{ index . 0 }}
  mountPath: /etc/agentgov/providers/{{ index . 0 }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "agentgov.providerVolumes" -}}
{{- range (include "agentgov.providerFiles" . | fromJsonArray) }}
- name: {{ index . 0 }}
  secret:
    secretName: {{ index . 1 }}
    items:
      - key: {{ index . 2 }}
        path: {{ index . 2 }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* The TCP port of an http(s) URL: the one it names, else the scheme's. */}}
{{- define "agentgov.urlPort" -}}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}{{ else if eq $url.scheme "http" }}80{{ else }}443{{ end }}
{{- end }}

