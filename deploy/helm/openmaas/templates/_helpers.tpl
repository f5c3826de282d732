{{/* Names and labels shared by every manifest. */}}
{{- define "openmaas.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "openmaas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "openmaas.labels" -}}
app.kubernetes.io/name: {{ include "openmaas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "openmaas.selector" -}}
app.kubernetes.io/name: {{ include "openmaas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "openmaas.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "openmaas.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "openmaas.fullname" .) -}}
{{- end -}}

{{- define "openmaas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "openmaas.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* A variable from the chart's Secret. */}}
{{- define "openmaas.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "openmaas.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* What the API and the workers both need: state, database, Redis, artifacts, key. */}}
{{- define "openmaas.commonEnv" -}}
- name: HOME
  value: /var/lib/openmaas
- name: OPENMAAS_HOME
  value: /var/lib/openmaas
- name: OPENMAAS_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{ include "openmaas.secretEnv" (dict "root" . "name" "OPENMAAS_DATABASE_URL" "key" "database-url") }}
{{ include "openmaas.secretEnv" (dict "root" . "name" "OPENMAAS_ENCRYPTION_KEY" "key" "encryption-key") }}
{{- if .Values.artifacts.url }}
- name: OPENMAAS_ARTIFACTS_URL
  value: {{ .Values.artifacts.url | quote }}
- name: OPENMAAS_ARTIFACT_CACHE_DIR
  value: /var/lib/openmaas/artifact-cache
- name: AWS_DEFAULT_REGION
  value: {{ .Values.artifacts.s3.region | quote }}
{{- if .Values.artifacts.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ .Values.artifacts.s3.endpoint | quote }}
{{- end }}
{{ include "openmaas.secretEnv" (dict "root" . "name" "AWS_ACCESS_KEY_ID" "key" "aws-access-key-id" "optional" true) }}
{{ include "openmaas.secretEnv" (dict "root" . "name" "AWS_SECRET_ACCESS_KEY" "key" "aws-secret-access-key" "optional" true) }}
{{- else }}
- name: OPENMAAS_ARTIFACTS_DIR
  value: /var/lib/openmaas-artifacts
{{- end }}
{{- if .Values.tracing.otlpEndpoint }}
- name: OPENMAAS_OTEL_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Writable places under a read-only root filesystem. */}}
{{- define "openmaas.volumeMounts" -}}
- name: home
  mountPath: /var/lib/openmaas
- name: tmp
  mountPath: /tmp
- name: scratch
  mountPath: /dev/shm
{{- if not .Values.artifacts.url }}
- name: artifacts
  mountPath: /var/lib/openmaas-artifacts
{{- end }}
{{- end -}}

{{- define "openmaas.volumes" -}}
- name: home
  emptyDir:
    sizeLimit: {{ .cacheSizeLimit }}
- name: tmp
  emptyDir: {}
- name: scratch
  emptyDir:
    medium: Memory
    sizeLimit: {{ .scratchSizeLimit | default "2Gi" }}
{{- if not .root.Values.artifacts.url }}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ include "openmaas.fullname" .root }}-artifacts
{{- end }}
{{- end -}}
