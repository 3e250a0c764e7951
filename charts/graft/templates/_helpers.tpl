{{/* Chart name, overridable. */}}
{{- define "graft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, or release-chart when the release name lacks the chart name. */}}
{{- define "graft.fullname" -}}
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

{{- define "graft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "graft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "graft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "graft.labels" -}}
helm.sh/chart: {{ include "graft.chart" . }}
app.kubernetes.io/name: {{ include "graft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: graft
{{- end }}

{{- define "graft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "graft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The kopf peering object's name: peering.name, else the release's full name. */}}
{{- define "graft.peeringName" -}}
{{- default (include "graft.fullname" .) .Values.peering.name }}
{{- end }}

{{/* Reject value combinations that cannot work, with the fix in the message. */}}
{{- define "graft.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.peering.enabled) }}
{{- fail "replicas > 1 needs peering.enabled: true (kopf peering keeps one replica active); set replicas: 1 or enable peering" }}
{{- end }}
{{- range .Values.watchNamespaces }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) }}
{{- fail (printf "watchNamespaces: %q is not a valid namespace name" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The namespaced rules the operator needs, wherever it watches (ClusterRole for all namespaces,
one Role per namespace otherwise). Argument: the root context.
*/}}
{{- define "graft.operatorRules" -}}
# Graft's own resources: kopf watches them and patches status, annotations and finalizers.
- apiGroups: ["graft.dev"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "watch", "patch"]
# Promotion creates a ModelEndpoint when a job names one that does not exist yet.
- apiGroups: ["graft.dev"]
  resources: ["modelendpoints"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Status is written with merge patches of the status subresource (never read through it).
- apiGroups: ["graft.dev"]
  resources: ["finetunejobs/status", "modelendpoints/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion: true, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only with update on the owner's finalizers.
- apiGroups: ["graft.dev"]
  resources: ["finetunejobs/finalizers", "modelendpoints/finalizers"]
  verbs: ["update"]
# KubeRay children: a RayJob per training run, deleted after its TTL once the job finishes.
- apiGroups: ["ray.io"]
  resources: ["rayjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A RayService per ModelEndpoint; garbage collection deletes it with its owner.
- apiGroups: ["ray.io"]
  resources: ["rayservices"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The pods of a job's Ray cluster, watched while it starts and runs: an image that cannot be pulled
# or an OOM kill fails the job with a clear reason (KubeRay's RayJob status does not say).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# The Ray token Secret of each RayJob/RayService (graft.operator.rayauth) and the state-key Secret of
# each RayJob (graft.operator.builders.statekey, generateName): created, never read, listed or
# updated (the token is re-derived from the operator's key; the state key only the pods read).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# The NetworkPolicy of each Ray cluster (graft.operator.builders.netpol): created, owned by the job
# or endpoint, deleted by garbage collection.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create"]
# kopf posts handler progress and errors as Events (it only ever creates them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
# kopf peering for a namespace-restricted operator.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Cluster-scoped reads the operator needs in every mode. */}}
{{- define "graft.clusterRules" -}}
# kopf discovers and watches the CRDs it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# FineTunePolicy namespaceSelectors match namespace labels; kopf also tracks namespaces.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["graft.dev"]
  resources: ["finetunepolicies"]
  verbs: ["get", "list", "watch"]
{{- if and .Values.peering.enabled (not .Values.watchNamespaces) }}
# kopf peering for a cluster-wide operator.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
