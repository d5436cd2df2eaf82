{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "modelloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "modelloop.fullname" -}}
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

{{- define "modelloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "modelloop.labels" -}}
helm.sh/chart: {{ include "modelloop.chart" . }}
{{ include "modelloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelloop
{{- end }}

{{/* Labels selecting the operator pod; never change them (Deployment selectors are immutable). */}}
{{- define "modelloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelloop.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "modelloop.trainerImage" -}}
{{- default (printf "ghcr.io/modelloop/trainer:%s" .Chart.AppVersion) .Values.operator.trainerImage }}
{{- end }}

{{- define "modelloop.serverImage" -}}
{{- default (printf "ghcr.io/modelloop/server:%s" .Chart.AppVersion) .Values.operator.serverImage }}
{{- end }}

{{- define "modelloop.peeringName" -}}
{{- default (include "modelloop.fullname" .) .Values.peering.name }}
{{- end }}

{{/* True (non-empty) when the operator watches every namespace. */}}
{{- define "modelloop.clusterWide" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
The subject of every binding: the operator's ServiceAccount.
*/}}
{{- define "modelloop.subjects" -}}
- kind: ServiceAccount
  name: {{ include "modelloop.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
A permission set for one purpose, granted cluster-wide (ClusterRole + ClusterRoleBinding) or,
with watchNamespaces, only in those namespaces (a Role + RoleBinding in each of them), so an
operator limited to some namespaces holds no cluster-wide rights on namespaced resources.
Arguments: (dict "root" $ "purpose" "workloads" "rules" "<yaml list of rules>")
*/}}
{{- define "modelloop.scopedRole" -}}
{{- $root := .root }}
{{- $purpose := .purpose }}
{{- $rules := .rules }}
{{- $name := printf "%s-%s" (include "modelloop.fullname" $root) $purpose }}
{{- $namespaces := list "" }}
{{- if not (include "modelloop.clusterWide" $root) }}
{{- $namespaces = $root.Values.watchNamespaces }}
{{- end }}
{{- range $ns := $namespaces }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ if $ns }}Role{{ else }}ClusterRole{{ end }}
metadata:
  name: {{ $name }}
  {{- with $ns }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- include "modelloop.labels" $root | nindent 4 }}
    modelloop.dev/rbac-purpose: {{ $purpose }}
rules:
{{- $rules | trim | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ if $ns }}RoleBinding{{ else }}ClusterRoleBinding{{ end }}
metadata:
  name: {{ $name }}
  {{- with $ns }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- include "modelloop.labels" $root | nindent 4 }}
    modelloop.dev/rbac-purpose: {{ $purpose }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ if $ns }}Role{{ else }}ClusterRole{{ end }}
  name: {{ $name }}
subjects:
  {{- include "modelloop.subjects" $root | nindent 2 }}
{{- end }}
{{- end }}

{{/* A cluster-scoped permission set (cluster-scoped resources need a ClusterRole). */}}
{{- define "modelloop.clusterRole" -}}
{{- $root := .root }}
{{- $name := printf "%s-%s" (include "modelloop.fullname" $root) .purpose }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $name }}
  labels:
    {{- include "modelloop.labels" $root | nindent 4 }}
    modelloop.dev/rbac-purpose: {{ .purpose }}
rules:
{{- .rules | trim | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "modelloop.labels" $root | nindent 4 }}
    modelloop.dev/rbac-purpose: {{ .purpose }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  {{- include "modelloop.subjects" $root | nindent 2 }}
{{- end }}

{{/* The metrics Service's name; Service names are DNS labels (at most 63 characters). */}}
{{- define "modelloop.metricsServiceName" -}}
{{- printf "%s-metrics" (include "modelloop.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
