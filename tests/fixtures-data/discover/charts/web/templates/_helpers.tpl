{{- define "web.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "web.hookImage" -}}
{{- printf "%s:%s" .Values.hooks.image.repository .Values.hooks.image.tag -}}
{{- end -}}
