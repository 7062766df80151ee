{{/*
Names. With the release named spark-admission (or any name containing it) every object is
called after the release, as deploy/base names them; otherwise <release>-spark-admission.
*/}}
{{- define "spark-admission.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spark-admission.fullname" -}}
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

{{/* Labels on every object: deploy/base's, plus Helm's own. */}}
{{- define "spark-admission.labels" -}}
app.kubernetes.io/name: {{ include "spark-admission.name" . }}
app.kubernetes.io/part-of: spark-admission
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The webhook pods: what the Deployment, Service, PDB, NetworkPolicies and anti-affinity select. */}}
{{- define "spark-admission.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spark-admission.name" . }}
app.kubernetes.io/component: webhook
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spark-admission.serviceAccountName" -}}
{{- default (include "spark-admission.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The policy ConfigMap: the chart's own, or existingPolicyConfigMap. */}}
{{- define "spark-admission.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "spark-admission.fullname" .)) .Values.existingPolicyConfigMap }}
{{- end }}

{{- define "spark-admission.tlsSecret" -}}
{{- if eq .Values.certificates.mode "existingSecret" }}
{{- required "certificates.existingSecret.name is required with certificates.mode existingSecret" .Values.certificates.existingSecret.name }}
{{- else }}
{{- printf "%s-tls" (include "spark-admission.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The policy webhook's Service (every replica, ready or not: templates/service.yaml), as
deploy/base names it: <fullname>-policy-check, the fullname cut to fit 63 characters.
*/}}
{{- define "spark-admission.policyCheckService" -}}
{{- printf "%s-policy-check" (include "spark-admission.fullname" . | trunc 50 | trimSuffix "-") }}
{{- end }}

{{/*
The DNS names of both Services, first the one in the pod webhooks' clientConfig, for the
suffixes given: (list ROOT SUFFIX...), each name <service>.<namespace><SUFFIX>.
*/}}
{{- define "spark-admission.serviceNames" -}}
{{- $root := first . }}
{{- $names := list }}
{{- range $svc := list (include "spark-admission.fullname" $root) (include "spark-admission.policyCheckService" $root) }}
{{- range $suffix := rest $ }}
{{- $names = append $names (printf "%s.%s%s" $svc $root.Release.Namespace $suffix) }}
{{- end }}
{{- end }}
{{- $names | toJson }}
{{- end }}

{{/*
What cert-manager's Certificate lists, as deploy/overlays/cert-manager: .svc and
.svc.cluster.local.
*/}}
{{- define "spark-admission.serviceDNSNames" -}}
{{- include "spark-admission.serviceNames" (list . ".svc" ".svc.cluster.local") }}
{{- end }}

{{/* Every name of the generated pair: the Services', short ones and extraDNSNames included. */}}
{{- define "spark-admission.dnsNames" -}}
{{- $names := include "spark-admission.serviceNames" (list . ".svc" ".svc.cluster.local" "") | fromJsonArray }}
{{- concat $names .Values.certificates.generate.extraDNSNames | toJson }}
{{- end }}

{{/*
matchConditions are in admissionregistration.k8s.io/v1 from Kubernetes 1.28 (feature gate,
on by default from 1.28's beta) and GA in 1.30; older apiservers refuse the field. "auto"
renders them on 1.30 and later, as deploy/README.md advises.
*/}}
{{- define "spark-admission.matchConditions" -}}
{{- $mode := .Values.webhook.matchConditions }}
{{- if eq $mode "enabled" }}true
{{- else if eq $mode "disabled" }}
{{- else if semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version }}true
{{- end }}
{{- end }}

{{/*
The webhooks' clientConfig for PATH: SERVICE, or webhook.url (testing, out-of-cluster).
caBundle from the certificate mode (cert-manager injects it).
*/}}
{{- define "spark-admission.clientConfig" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
{{- $ca := index . 2 }}
{{- $service := index . 3 }}
{{- if $root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) $path | quote }}
{{- else }}
service:
  namespace: {{ $root.Release.Namespace }}
  name: {{ $service }}
  path: {{ $path }}
  port: 443
{{- end }}
{{- with $ca }}
caBundle: {{ . }}
{{- end }}
{{- end }}
