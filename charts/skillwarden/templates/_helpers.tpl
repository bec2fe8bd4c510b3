{{/* Names and labels. */}}
{{- define "skillwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "skillwarden.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "skillwarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "skillwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: skillwarden
{{- end -}}

{{- define "skillwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skillwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "skillwarden.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "skillwarden.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name must name an existing ServiceAccount when operator.serviceAccount.create=false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "skillwarden.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "skillwarden.sidecarImage" -}}
{{- $img := .Values.sidecar.image -}}
{{- if $img.repository -}}
{{- if $img.digest -}}{{ printf "%s@%s" $img.repository $img.digest }}{{- else -}}{{ printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}{{- end -}}
{{- else -}}
{{- include "skillwarden.image" . -}}
{{- end -}}
{{- end -}}

{{- define "skillwarden.opaImage" -}}
{{- if .Values.opa.image.digest -}}
{{- printf "%s@%s" .Values.opa.image.repository .Values.opa.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.opa.image.repository .Values.opa.image.tag -}}
{{- end -}}
{{- end -}}

{{- define "skillwarden.webhookService" -}}{{ include "skillwarden.fullname" . }}-webhook{{- end -}}
{{- define "skillwarden.bundleService" -}}{{ include "skillwarden.fullname" . }}-bundles{{- end -}}
{{- define "skillwarden.metricsService" -}}{{ include "skillwarden.fullname" . }}-metrics{{- end -}}
{{- define "skillwarden.mutatingName" -}}{{ include "skillwarden.fullname" . }}-mutating{{- end -}}
{{- define "skillwarden.validatingName" -}}{{ include "skillwarden.fullname" . }}-validating{{- end -}}
{{- define "skillwarden.certificateName" -}}{{ include "skillwarden.fullname" . }}-webhook{{- end -}}

{{- define "skillwarden.tlsSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "skillwarden.fullname" .)) .Values.certificates.secretName -}}
{{- end -}}

{{- define "skillwarden.bundleUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "skillwarden.bundleService" .) .Release.Namespace 80 -}}
{{- end -}}

{{/* Webhook configurations are shipped by the chart unless kopf manages them (dev only). */}}
{{- define "skillwarden.chartWebhooks" -}}
{{- if not .Values.webhook.managed -}}true{{- end -}}
{{- end -}}

{{- define "skillwarden.issuerRef" -}}
{{- if .Values.certificates.certManager.createSelfSignedIssuer -}}
name: {{ include "skillwarden.fullname" . }}-ca
kind: Issuer
group: cert-manager.io
{{- else -}}
name: {{ .Values.certificates.certManager.issuerRef.name }}
kind: {{ .Values.certificates.certManager.issuerRef.kind }}
group: {{ .Values.certificates.certManager.issuerRef.group }}
{{- end -}}
{{- end -}}

{{- define "skillwarden.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "skillwarden.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* clientConfig for one webhook entry: (dict "ctx" $ "path" "/handler-id"). */}}
{{- define "skillwarden.webhookClient" -}}
{{- $w := .ctx.Values.webhook -}}
{{- if $w.externalUrl -}}
url: {{ printf "%s%s" (trimSuffix "/" $w.externalUrl) .path | quote }}
{{- else -}}
service:
  name: {{ include "skillwarden.webhookService" .ctx }}
  namespace: {{ .ctx.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- with $w.caBundle }}
caBundle: {{ . }}
{{- end }}
{{- end -}}
