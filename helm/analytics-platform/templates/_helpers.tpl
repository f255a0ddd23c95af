{{/*
Names, labels and the pod pieces every component shares.
Helpers that take a component are called with (dict "root" $ "component" "<name>" ...).
*/}}

{{- define "ap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix; 40 characters at most so "<fullname>-drain-1023" etc. stay DNS labels. */}}
{{- define "ap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ap.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every pod of the release, run and step pods included (the NetworkPolicies match them). */}}
{{- define "ap.releaseSelector" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: analytics-platform
{{- end -}}

{{- define "ap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ap.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .location }}
analytics-platform/code-location: {{ . }}
{{- end }}
{{- with .shard }}
analytics-platform/drain-shard: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "ap.labels" -}}
helm.sh/chart: {{ include "ap.chart" .root }}
{{ include "ap.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: analytics-platform
{{- with .root.Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod template labels: the object labels plus the component's podLabels. */}}
{{- define "ap.podLabels" -}}
{{ include "ap.labels" . }}
{{- with .values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod annotations: checksums of the ConfigMaps the pod reads (a change rolls the pods), then global, then the component's. */}}
{{- define "ap.podAnnotations" -}}
{{- $root := .root -}}
{{- $annotations := dict -}}
{{- range .checksums -}}
{{- $_ := set $annotations (printf "checksum/%s" .) (include (print $root.Template.BasePath "/configmap-" . ".yaml") $root | sha256sum) -}}
{{- end -}}
{{- $annotations = merge $annotations (deepCopy (.values.podAnnotations | default dict)) (deepCopy ($root.Values.global.podAnnotations | default dict)) -}}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* nodeSelector / tolerations / affinity: the component's merged over global. */}}
{{- define "ap.scheduling" -}}
{{- $g := .root.Values.global -}}
{{- $c := .values -}}
{{- $nodeSelector := merge (deepCopy ($c.nodeSelector | default dict)) (deepCopy ($g.nodeSelector | default dict)) -}}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tolerations := concat ($g.tolerations | default list) ($c.tolerations | default list) -}}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($c.affinity | default $g.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ap.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "ap.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "ap.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- printf "%s-dagster" (include "ap.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "ap.instanceConfigMap" -}}{{ include "ap.fullname" . }}-dagster-instance{{- end -}}
{{- define "ap.workspaceConfigMap" -}}{{ include "ap.fullname" . }}-workspace{{- end -}}
{{- define "ap.appConfigMap" -}}{{ include "ap.fullname" . }}-config{{- end -}}
{{- define "ap.filesConfigMap" -}}{{ include "ap.fullname" . }}-files{{- end -}}
{{- define "ap.mainCodeServer" -}}{{ include "ap.fullname" . }}-user-code{{- end -}}
{{- define "ap.webserverName" -}}{{ include "ap.fullname" . }}-webserver{{- end -}}

{{- define "ap.dagsterHome" -}}/opt/dagster/dagster_home{{- end -}}
{{- define "ap.kafkaTlsDir" -}}/etc/kafka-tls{{- end -}}
{{- define "ap.filesDir" -}}/etc/analytics-platform{{- end -}}

{{/* Secrets of the Dagster pods (webserver, daemon, code servers, runs), as a JSON list. */}}
{{- define "ap.dagsterSecrets" -}}
{{- $secrets := list .Values.secrets.database -}}
{{- with .Values.secrets.kafka }}{{ $secrets = append $secrets . }}{{ end -}}
{{- with .Values.secrets.alerts }}{{ $secrets = append $secrets . }}{{ end -}}
{{- toJson $secrets -}}
{{- end -}}

{{/* envFrom of the Dagster pods: the app ConfigMap and the Secrets above. */}}
{{- define "ap.dagsterEnvFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "ap.appConfigMap" . }}
{{- range (include "ap.dagsterSecrets" . | fromJsonArray) }}
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end -}}

{{/* Volumes of the Dagster pods; (dict "root" $ "workspace" true) adds the workspace ConfigMap. */}}
{{- define "ap.dagsterVolumes" -}}
{{- $root := .root -}}
volumes:
  - name: tmp
    emptyDir: {}
  - name: dagster-home
    emptyDir: {}
  - name: dagster-instance
    configMap:
      name: {{ include "ap.instanceConfigMap" $root }}
{{- if .workspace }}
  - name: workspace
    configMap:
      name: {{ include "ap.workspaceConfigMap" $root }}
{{- end }}
{{- with (include "ap.sharedVolumes" $root | trim) }}
{{ . | indent 2 }}
{{- end }}
{{- end -}}

{{- define "ap.dagsterVolumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: dagster-home
    mountPath: {{ include "ap.dagsterHome" .root }}
  - name: dagster-instance
    mountPath: {{ include "ap.dagsterHome" .root }}/dagster.yaml
    subPath: dagster.yaml
    readOnly: true
{{- if .workspace }}
  - name: workspace
    mountPath: /opt/dagster/workspace
    readOnly: true
{{- end }}
{{- with (include "ap.sharedVolumeMounts" .root | trim) }}
{{ . | indent 2 }}
{{- end }}
{{- end -}}

{{/* The Kafka CA and the config files, mounted wherever the platform's code runs: list items at
column 0 (callers indent them), nothing when neither is configured. */}}
{{- define "ap.sharedVolumes" -}}
{{- if .Values.secrets.kafkaTls }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.secrets.kafkaTls }}
    items:
      - key: ca.crt
        path: ca.crt
{{ end -}}
{{- if .Values.config.files }}
- name: config-files
  configMap:
    name: {{ include "ap.filesConfigMap" . }}
{{ end -}}
{{- end -}}

{{- define "ap.sharedVolumeMounts" -}}
{{- if .Values.secrets.kafkaTls }}
- name: kafka-tls
  mountPath: {{ include "ap.kafkaTlsDir" . }}
  readOnly: true
{{ end -}}
{{- if .Values.config.files }}
- name: config-files
  mountPath: {{ include "ap.filesDir" . }}
  readOnly: true
{{ end -}}
{{- end -}}

{{/* ConfigMaps whose checksum rolls a pod that reads them. */}}
{{- define "ap.appChecksums" -}}
{{- $names := list "app" -}}
{{- if .Values.config.files }}{{ $names = append $names "files" }}{{ end -}}
{{- toJson $names -}}
{{- end -}}

{{- define "ap.securityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}
