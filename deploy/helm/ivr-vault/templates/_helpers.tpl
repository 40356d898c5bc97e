{{/* Names and labels. */}}
{{- define "ivr.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ivr.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ivr.labels" -}}
{{ include "ivr.selector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "ivr.serviceAccount" -}}
{{- $spec := index .root.Values .component -}}
{{- $spec.serviceAccountName | default (printf "%s-%s" (include "ivr.fullname" .root) .component) -}}
{{- end -}}

{{- define "ivr.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The restricted Pod Security Standard, for every pod of the chart. */}}
{{- define "ivr.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "ivr.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* A secret file: the env var NAME_FILE pointing at a mounted Secret's key. */}}
{{- define "ivr.secretFile" -}}
- name: {{ .env }}_FILE
  value: /secrets/{{ .dir }}/{{ .ref.key }}
{{- end -}}

{{- define "ivr.vaultEnv" -}}
- name: VAULT_ADDR
  value: {{ .Values.vault.address | quote }}
{{- if .Values.vault.ca.configMap }}
- name: VAULT_CACERT
  value: /vault-ca/{{ .Values.vault.ca.key }}
{{- end }}
{{- end -}}

{{- define "ivr.drainSeconds" -}}
{{- .Values.shutdownDrainSeconds | int -}}
{{- end -}}
