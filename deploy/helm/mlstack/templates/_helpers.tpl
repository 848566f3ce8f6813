{{/* Names, labels and the values several templates share. */}}

{{/* <release>-<component>, e.g. mlstack-serving. */}}
{{- define "mlstack.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlstack.selectorLabels" -}}
app.kubernetes.io/name: mlstack
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mlstack.labels" -}}
{{ include "mlstack.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The Secret every pod reads: the chart's own, or the one named in secrets.existingSecret. */}}
{{- define "mlstack.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "mlstack.fullname" (dict "root" . "component" "secrets")) -}}
{{- end -}}

{{/* Where the apps and the trial MLflow find their dependencies: the in-chart trial one, or the values'. */}}
{{- define "mlstack.mongoHost" -}}
{{- if .Values.trial.mongo.enabled -}}{{ include "mlstack.fullname" (dict "root" . "component" "mongo") }}{{- else -}}{{ .Values.mongo.host }}{{- end -}}
{{- end -}}

{{- define "mlstack.mlflowUri" -}}
{{- if .Values.trial.mlflow.enabled -}}http://{{ include "mlstack.fullname" (dict "root" . "component" "mlflow") }}:5000{{- else -}}{{ .Values.mlflow.trackingUri }}{{- end -}}
{{- end -}}

{{- define "mlstack.s3Endpoint" -}}
{{- if .Values.trial.s3.enabled -}}http://{{ include "mlstack.fullname" (dict "root" . "component" "s3") }}:9000{{- else -}}{{ .Values.s3.endpointUrl }}{{- end -}}
{{- end -}}

{{- define "mlstack.postgresHost" -}}
{{- if .Values.trial.postgres.enabled -}}{{ include "mlstack.fullname" (dict "root" . "component" "postgres") }}{{- else -}}{{ .Values.postgres.host }}{{- end -}}
{{- end -}}

{{/* Serving's in-cluster address (its Service: port 80 to the pods' Nginx). */}}
{{- define "mlstack.servingUrl" -}}
http://{{ include "mlstack.fullname" (dict "root" . "component" "serving") }}
{{- end -}}

{{/* The container security context of every container: not root, no privilege escalation, no capabilities.
     readOnly: whether the root filesystem is read-only (what the process writes goes to emptyDir volumes). */}}
{{- define "mlstack.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnly }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mlstack.podSecurityContext" -}}
runAsNonRoot: true
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
An app's values for the shared Nginx template as container env entries: the KEY=VALUE lines of its
<folder>/nginx/nginx.env (files/nginx/<app>.env links to it; compose reads the same file with env_file).
*/}}
{{- define "mlstack.nginxEnv" -}}
{{- $file := printf "files/nginx/%s.env" .app -}}
{{- $text := .root.Files.Get $file | required (printf "%s is missing from the chart" $file) -}}
{{- range $line := splitList "\n" $text }}
{{- $line = trim $line }}
{{- if and $line (not (hasPrefix "#" $line)) }}
{{- $kv := splitn "=" 2 $line }}
- {name: {{ trim $kv._0 }}, value: {{ trim (default "" $kv._1) | quote }}}
{{- end }}
{{- end }}
{{- end }}
