{{/*
Cross-field checks the JSON schema cannot express. Each message names the key(s) to change.
Included once, from deployment.yaml, so `helm template|install|lint` all stop on them.
*/}}
{{- define "skillwarden.validate" -}}
{{- $v := .Values -}}
{{- $replicas := int $v.operator.replicas -}}
{{- if and $v.webhook.pods.enabled (not $v.providerKey.secretName) -}}
{{- fail "providerKey.secretName is required while webhook.pods.enabled=true: set it to the name of the Secret (in each workload namespace) that holds the Anthropic API key, e.g. --set providerKey.secretName=anthropic-api-key" -}}
{{- end -}}
{{- if and (eq $v.certificates.mode "self-signed-per-pod") (gt $replicas 1) -}}
{{- fail (printf "certificates.mode=self-signed-per-pod gives each replica its own certificate, so the webhook caBundle cannot match %d replicas: set certificates.mode=secret (shared Secret) or cert-manager, or set operator.replicas=1" $replicas) -}}
{{- end -}}
{{- if and (eq $v.certificates.mode "self-signed-per-pod") (not $v.webhook.managed) -}}
{{- fail "certificates.mode=self-signed-per-pod needs webhook.managed=true (only the process itself knows its certificate, so it must register the webhooks): set webhook.managed=true, or use certificates.mode=secret" -}}
{{- end -}}
{{- if eq $v.certificates.mode "cert-manager" -}}
{{- if and (not $v.certificates.certManager.createSelfSignedIssuer) (not $v.certificates.certManager.issuerRef.name) -}}
{{- fail "certificates.mode=cert-manager needs an issuer: set certificates.certManager.issuerRef.name (and .kind: Issuer|ClusterIssuer), or set certificates.certManager.createSelfSignedIssuer=true" -}}
{{- end -}}
{{- if and $v.certificates.certManager.createSelfSignedIssuer $v.certificates.certManager.issuerRef.name -}}
{{- fail "certificates.certManager.createSelfSignedIssuer=true and certificates.certManager.issuerRef.name are both set: keep one" -}}
{{- end -}}
{{- if $v.webhook.managed -}}
{{- fail "webhook.managed=true lets the operator write its own webhook configurations, which cert-manager's cainjector cannot annotate: use webhook.managed=false with certificates.mode=cert-manager" -}}
{{- end -}}
{{- end -}}
{{- if and $v.webhook.managed (eq $v.certificates.mode "secret") -}}
{{- fail "webhook.managed=true (kopf writes its own configurations, for local development) serves kopf's own certificate, not the shared Secret: set certificates.mode=self-signed-per-pod with operator.replicas=1, or keep webhook.managed=false" -}}
{{- end -}}
{{- if and $v.operator.podDisruptionBudget.enabled (ge (int $v.operator.podDisruptionBudget.minAvailable) $replicas) -}}
{{- fail (printf "operator.podDisruptionBudget.minAvailable=%d with operator.replicas=%d blocks every node drain: set operator.replicas above minAvailable (e.g. operator.replicas=2) or operator.podDisruptionBudget.enabled=false" (int $v.operator.podDisruptionBudget.minAvailable) $replicas) -}}
{{- end -}}
{{- if gt (int $v.opa.pollMinSeconds) (int $v.opa.pollMaxSeconds) -}}
{{- fail (printf "opa.pollMinSeconds=%d is above opa.pollMaxSeconds=%d: OPA rejects that bundle polling config" (int $v.opa.pollMinSeconds) (int $v.opa.pollMaxSeconds)) -}}
{{- end -}}
{{- if ge (int $v.certificates.rotateBeforeDays) (int $v.certificates.validityDays) -}}
{{- fail (printf "certificates.rotateBeforeDays=%d must be below certificates.validityDays=%d, or the certificate is rotated continuously" (int $v.certificates.rotateBeforeDays) (int $v.certificates.validityDays)) -}}
{{- end -}}
{{- if eq (int $v.operator.ports.webhook) (int $v.operator.ports.http) -}}
{{- fail (printf "operator.ports.webhook and operator.ports.http are both %d: the webhook (HTTPS) and the bundle/metrics service (HTTP) need their own ports" (int $v.operator.ports.http)) -}}
{{- end -}}
{{- if eq (int $v.sidecar.port) (int $v.sidecar.metricsPort) -}}
{{- fail "sidecar.port and sidecar.metricsPort must differ: app traffic and /metrics are separate listeners" -}}
{{- end -}}
{{- /* A tmpfs spool's pages are charged to the sidecar container: below sizeLimit + 128Mi (the
process) the kernel OOM-kills the sidecar instead of the recorder answering 503. The operator
checks the same at start-up (injection.memory_spool_problem); this stops `helm install` first. */ -}}
{{- if eq (toString (dig "spool" "medium" "" $v.recording)) "Memory" -}}
{{- $size := dig "spool" "sizeLimit" "1Gi" $v.recording -}}
{{- $limit := dig "limits" "memory" (dig "requests" "memory" "" $v.sidecar.resources) $v.sidecar.resources -}}
{{- $sizeMi := include "skillwarden.mebibytes" $size -}}
{{- $limitMi := include "skillwarden.mebibytes" $limit -}}
{{- if and $limit $sizeMi $limitMi (lt (float64 $limitMi) (addf (float64 $sizeMi) 128)) -}}
{{- fail (printf "recording.spool.medium=Memory puts the spool in the sidecar's memory: sidecar.resources.limits.memory=%v must be at least recording.spool.sizeLimit (%v) + 128Mi for the process = %.0fMi; raise the limit or lower recording.spool.sizeLimit" $limit $size (addf (float64 $sizeMi) 128)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A Kubernetes memory quantity in MiB (as text), or "" when it is not one this template can read
(the operator then checks it at start-up). */}}
{{- define "skillwarden.mebibytes" -}}
{{- if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- divf (float64 .) 1048576 -}}
{{- else -}}
{{- $text := toString . -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text -}}
{{- $suffix := trimPrefix $number $text -}}
{{- $scale := dict "" 1 "k" 1000 "Ki" 1024 "M" 1000000 "Mi" 1048576 "G" 1000000000 "Gi" 1073741824 "T" 1000000000000 "Ti" 1099511627776 -}}
{{- if and $number (hasKey $scale $suffix) -}}
{{- divf (mulf (float64 $number) (get $scale $suffix)) 1048576 -}}
{{- end -}}
{{- end -}}
{{- end -}}
