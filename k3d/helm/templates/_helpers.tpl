{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "coelho-realtime.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: the release name when it already contains the chart name
(release "coelho-realtime" -> "coelho-realtime"), else "<release>-<chart>".
Object names append "-<component>" to it: coelho-realtime-fastapi, ...
*/}}
{{- define "coelho-realtime.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Name of a component's objects. Call with (dict "root" $ "component" "fastapi").
*/}}
{{- define "coelho-realtime.componentName" -}}
{{- printf "%s-%s" (include "coelho-realtime.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
helm.sh/chart label value.
*/}}
{{- define "coelho-realtime.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object of this chart.
*/}}
{{- define "coelho-realtime.labels" -}}
helm.sh/chart: {{ include "coelho-realtime.chart" . }}
app.kubernetes.io/name: {{ include "coelho-realtime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coelho-realtime
{{- end }}

{{/*
Selector labels of a component (immutable on a Deployment: no version here).
Call with (dict "root" $ "component" "fastapi").
*/}}
{{- define "coelho-realtime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coelho-realtime.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of a component's objects. The version label is the component's own
version (its image tag without digest) when one is given as "version".
Call with (dict "root" $ "component" "fastapi" ["version" "<tag>"]).
*/}}
{{- define "coelho-realtime.componentLabels" -}}
{{- $version := .root.Chart.AppVersion }}
{{- with .version }}
{{- $version = regexReplaceAll "[^A-Za-z0-9_.-]" (first (splitList "@" .)) "-" | trunc 63 | trimSuffix "-" | trimSuffix "." }}
{{- end -}}
helm.sh/chart: {{ include "coelho-realtime.chart" .root }}
{{ include "coelho-realtime.selectorLabels" . }}
app.kubernetes.io/version: {{ $version | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: coelho-realtime
{{- end }}

{{/*
The tag an app image is deployed with: its image.tag, or the chart's
appVersion when the tag is empty (Helm convention). In production a mutable
tag (listed in .Values.mutableTags) fails the render.
Call with (dict "root" $ "key" "fastapi" "image" .Values.fastapi.image).
*/}}
{{- define "coelho-realtime.imageTag" -}}
{{- $tag := toString (.image.tag | default .root.Chart.AppVersion) }}
{{- if not $tag }}
{{- fail (printf "%s.image.tag is empty and the chart has no appVersion to fall back to" .key) }}
{{- end }}
{{- if eq .root.Values.environment "production" }}
{{- $bare := lower (first (splitList "@" $tag)) }}
{{- if has $bare .root.Values.mutableTags }}
{{- fail (printf "%s.image.tag resolves to %q, a mutable tag; environment=production deploys immutable tags only (a commit SHA). Set %s.image.tag or remove %q from mutableTags." .key $tag .key $bare) }}
{{- end }}
{{- end }}
{{- $tag }}
{{- end }}

{{/*
Full image reference "<repository>:<tag>" of an app.
Call with (dict "root" $ "key" "fastapi" "image" .Values.fastapi.image).
*/}}
{{- define "coelho-realtime.image" -}}
{{- if not .image.repository }}
{{- fail (printf "%s.image.repository must not be empty" .key) }}
{{- end }}
{{- printf "%s:%s" .image.repository (include "coelho-realtime.imageTag" .) }}
{{- end }}

{{/*
LOG_LEVEL: .Values.logLevel, else "info" in production and "debug" elsewhere.
*/}}
{{- define "coelho-realtime.logLevel" -}}
{{- .Values.logLevel | default (ternary "info" "debug" (eq .Values.environment "production")) }}
{{- end }}

{{/*
ServiceAccount the app pods run as.
*/}}
{{- define "coelho-realtime.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "coelho-realtime.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/*
Whether the ServiceMonitor CRD is present: kube-prometheus-stack is part of
this release. (.Capabilities is not used: Argo CD and offline renders see
different API lists, and the CRD arrives in the same sync.)
*/}}
{{- define "coelho-realtime.serviceMonitors" -}}
{{- if and .Values.serviceMonitor.enabled (index .Values "kube-prometheus-stack" "enabled") }}true{{ end }}
{{- end }}

{{/*
Pod-level settings shared by the app Deployments.
*/}}
{{- define "coelho-realtime.podSpecCommon" -}}
serviceAccountName: {{ include "coelho-realtime.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
Environment variables every app container gets from the shared ConfigMap.
*/}}
{{- define "coelho-realtime.sharedEnvFrom" -}}
- configMapRef:
    name: {{ include "coelho-realtime.fullname" . }}-shared
{{- end }}

{{/*
Extra plain env vars of an app: a map name -> value from values.yaml.
*/}}
{{- define "coelho-realtime.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
