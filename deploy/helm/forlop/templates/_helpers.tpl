{{/* Names ---------------------------------------------------------------------------------- */}}
{{- define "forlop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "forlop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "forlop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "forlop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "forlop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The four services, in a fixed order; `forlop serve <name>` runs each. */}}
{{- define "forlop.serviceNames" -}}
ingest pathway messaging api
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------
     Call with (dict "root" $ "component" "ingest"). */}}
{{- define "forlop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "forlop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "forlop.labels" -}}
helm.sh/chart: {{ include "forlop.chart" .root }}
{{ include "forlop.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: forlop
{{- end -}}

{{/* Image ----------------------------------------------------------------------------------- */}}
{{- define "forlop.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "forlop.imagePullPolicy" -}}
{{- if .Values.image.pullPolicy -}}
{{- .Values.image.pullPolicy -}}
{{- else if .Values.image.digest -}}
IfNotPresent
{{- else -}}
Always
{{- end -}}
{{- end -}}

{{/* Topics: what each service's code consumes and produces (app/bootstrap.py, services/*).
     Keys are those of .Values.topics. Not configurable: they follow the code. */}}
{{- define "forlop.serviceTopics" -}}
ingest:
  consumes: [dips, esp]
  produces: [events, deadLetter, alerts]
pathway:
  consumes: [events]
  produces: [statusChanged, alerts, deadLetter]
messaging:
  consumes: [statusChanged, apprec]
  produces: [outbound, alerts, deadLetter]
api:
  consumes: []
  produces: [events, deadLetter, alerts]
{{- end -}}

{{- define "forlop.topicKeys" -}}
dips esp events statusChanged alerts deadLetter outbound apprec
{{- end -}}

{{/* The settings of the ConfigMap, as a YAML map of FORLOP_* -> string. */}}
{{- define "forlop.configData" -}}
{{- $c := .Values.config -}}
FORLOP_MODE: {{ $c.mode | quote }}
FORLOP_LOG_LEVEL: {{ $c.logLevel | quote }}
FORLOP_LOG_FORMAT: {{ $c.logFormat | quote }}
FORLOP_HTTP_HOST: "0.0.0.0"
FORLOP_HTTP_PORT: {{ $c.httpPort | toString | quote }}
FORLOP_DATA_DIR: "/tmp/forlop"
FORLOP_CONSUMER_GROUP: {{ $c.consumerGroup | quote }}
FORLOP_MAX_POLL_INTERVAL_MS: {{ $c.maxPollIntervalMs | int64 | toString | quote }}
FORLOP_INGEST_BATCH_WAIT_MS: {{ $c.ingestBatchWaitMs | int64 | toString | quote }}
FORLOP_RETRY_BACKOFF_MAX_S: {{ $c.retryBackoffMaxSeconds | int64 | toString | quote }}
FORLOP_KAFKA_MAX_REQUEST_BYTES: {{ $c.kafkaMaxRequestBytes | int64 | toString | quote }}
FORLOP_SCAN_INTERVAL_S: {{ $c.scanIntervalSeconds | int64 | toString | quote }}
FORLOP_TRANSPORT: {{ $c.transport | quote }}
FORLOP_APPREC_TIMEOUT_S: {{ $c.apprecTimeoutSeconds | int64 | toString | quote }}
FORLOP_MAX_SEND_ATTEMPTS: {{ $c.maxSendAttempts | int64 | toString | quote }}
FORLOP_APPREC_INBOX_BATCH: {{ $c.apprecInboxBatch | int64 | toString | quote }}
FORLOP_HTTP_MAX_BODY_BYTES: {{ $c.httpMaxBodyBytes | int64 | toString | quote }}
FORLOP_HTTP_MAX_RECORDS: {{ $c.httpMaxRecords | int64 | toString | quote }}
FORLOP_HTTP_MAX_URL_BYTES: {{ $c.httpMaxUrlBytes | int64 | toString | quote }}
FORLOP_HTTP_MAX_HEADER_BYTES: {{ $c.httpMaxHeaderBytes | int64 | toString | quote }}
FORLOP_HTTP_MAX_PROBLEMS: {{ $c.httpMaxProblems | int64 | toString | quote }}
FORLOP_HTTP_CONNECTION_LIMIT: {{ $c.httpConnectionLimit | int64 | toString | quote }}
FORLOP_HTTP_CHANNEL_TIMEOUT_S: {{ $c.httpChannelTimeoutSeconds | int64 | toString | quote }}
FORLOP_API_STATEMENT_TIMEOUT_MS: {{ $c.apiStatementTimeoutMs | int64 | toString | quote }}
FORLOP_API_MAX_SEARCH_VALUES: {{ $c.apiMaxSearchValues | int64 | toString | quote }}
FORLOP_API_MAX_SEARCH_REPEATS: {{ $c.apiMaxSearchRepeats | int64 | toString | quote }}
FORLOP_API_MAX_OFFSET: {{ $c.apiMaxOffset | int64 | toString | quote }}
{{- with include "forlop.publicBaseUrl" . }}
FORLOP_PUBLIC_BASE_URL: {{ . | quote }}
{{- end }}
{{- if $c.trustedProxies }}
FORLOP_TRUSTED_PROXIES: {{ join "," $c.trustedProxies | quote }}
{{- end }}
FORLOP_AUDIT_RETENTION_DAYS: {{ $c.auditRetentionDays | int64 | toString | quote }}
FORLOP_AUDIT_DEFAULT_PURPOSE: {{ $c.auditDefaultPurpose | quote }}
FORLOP_AUDIT_SYNCHRONOUS_COMMIT: {{ $c.auditSynchronousCommit | quote }}
FORLOP_RATE_LIMIT_PER_S: {{ $c.rateLimitPerSecond | int64 | toString | quote }}
FORLOP_RATE_LIMIT_BURST: {{ $c.rateLimitBurst | int64 | toString | quote }}
FORLOP_PUBLIC_SCHEME: {{ $c.publicScheme | quote }}
{{- if $c.transportUrl }}
FORLOP_TRANSPORT_URL: {{ $c.transportUrl | quote }}
{{- end }}
{{- if $c.transportDir }}
FORLOP_TRANSPORT_DIR: {{ $c.transportDir | quote }}
{{- end }}
{{- if $c.municipalDirectory }}
FORLOP_MUNICIPAL_DIRECTORY: {{ $c.municipalDirectory | quote }}
{{- end }}
{{- if $c.gpDirectory }}
FORLOP_GP_DIRECTORY: {{ $c.gpDirectory | quote }}
{{- end }}
FORLOP_SENDER_ORG_NUMBER: {{ $c.senderOrgNumber | quote }}
FORLOP_SENDER_HER_ID: {{ $c.senderHerId | quote }}
FORLOP_SENDER_ORG_NAME: {{ $c.senderOrgName | quote }}
{{- if not (kindIs "invalid" $c.dueSoonDays) }}
FORLOP_DUE_SOON_DAYS: {{ $c.dueSoonDays | int64 | toString | quote }}
{{- end }}
{{- if $c.clock }}
FORLOP_CLOCK: {{ $c.clock | quote }}
{{- end }}
{{- if .Values.xsd.override }}
FORLOP_XSD_DIR: "/etc/forlop/xsd"
{{- end }}
FORLOP_KAFKA_BOOTSTRAP: {{ .Values.kafka.bootstrap | quote }}
FORLOP_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.mechanism }}
FORLOP_KAFKA_SASL_MECHANISM: {{ .Values.kafka.sasl.mechanism | quote }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
FORLOP_KAFKA_SSL_CAFILE: "/etc/forlop/kafka-ca/{{ .Values.kafka.tls.caKey }}"
{{- end }}
FORLOP_TOPIC_PARTITIONS: {{ .Values.topics.defaultPartitions | int64 | toString | quote }}
{{- range $key := splitList " " (include "forlop.topicKeys" .) }}
FORLOP_TOPIC_{{ snakecase $key | upper }}: {{ (index $.Values.topics $key).name | quote }}
{{- end }}
{{- end -}}

{{/* The API's public base URL: config.publicBaseUrl, else the Ingress's host (https:// with TLS), else none. */}}
{{- define "forlop.publicBaseUrl" -}}
{{- if .Values.config.publicBaseUrl -}}
{{- .Values.config.publicBaseUrl | trimSuffix "/" -}}
{{- else if .Values.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{/* Checks that a schema cannot express; they fail rendering with a message. */}}
{{- define "forlop.validate" -}}
{{- $v := .Values -}}
{{- if and $v.xsd.override (not $v.xsd.volume) -}}
{{- fail "xsd.override=true needs xsd.volume: one Volume source holding the schemas, e.g. {configMap: {name: forlop-xsd}}" -}}
{{- end -}}
{{- if eq $v.config.mode "production" -}}
{{- if and (not $v.jwt.existingSecret) (or (not $v.jwt.jwksUrl) (not $v.jwt.issuer) (not $v.jwt.audience)) -}}
{{- fail "config.mode=production needs real JWT settings: set jwt.existingSecret, or jwt.jwksUrl, jwt.issuer and jwt.audience (forlop refuses to start the API without them; the development key exists in embedded mode only)" -}}
{{- end -}}
{{- if not $v.patientIds.existingSecret -}}
{{- fail "config.mode=production needs patientIds.existingSecret (FORLOP_PATIENT_ID_KEY): forlop refuses to start without it" -}}
{{- end -}}
{{- if not $v.logMasking.existingSecret -}}
{{- fail "config.mode=production needs logMasking.existingSecret (FORLOP_LOG_MASK_KEY): forlop refuses to start without it" -}}
{{- end -}}
{{- if and (not $v.tenants.registry) (not $v.tenants.existingConfigMap) -}}
{{- fail "config.mode=production needs the tenant registry (FORLOP_TENANTS): set tenants.registry or tenants.existingConfigMap" -}}
{{- end -}}
{{- end -}}
{{- if and (hasPrefix "SASL" $v.kafka.securityProtocol) (not $v.kafka.sasl.mechanism) -}}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if and (hasPrefix "SASL" $v.kafka.securityProtocol) (not $v.kafka.sasl.existingSecret) (not $v.kafka.sasl.strimziUserSecrets) -}}
{{- fail (printf "kafka.securityProtocol=%s needs the password from a Secret: set kafka.sasl.existingSecret or kafka.sasl.strimziUserSecrets=true" $v.kafka.securityProtocol) -}}
{{- end -}}
{{- if and (eq $v.config.transport "http") (not $v.config.transportUrl) -}}
{{- fail "config.transport=http needs config.transportUrl (the message gateway)" -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.ingress.host) -}}
{{- fail "ingress.enabled=true needs ingress.host: the public host name (links and TLS are for it)" -}}
{{- end -}}
{{- if not $v.database.existingSecret -}}
{{- fail "database.existingSecret is required: the name of an existing Secret holding the PostgreSQL URL" -}}
{{- end -}}
{{- end -}}

{{/* Secret-backed environment of a service container. Call with (dict "root" $ "component" "api"). */}}
{{- define "forlop.secretEnv" -}}
{{- $v := .root.Values -}}
{{- if $v.patientIds.existingSecret }}
- name: FORLOP_PATIENT_ID_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.patientIds.existingSecret | quote }}
      key: {{ $v.patientIds.key | quote }}
{{- end }}
{{- if $v.logMasking.existingSecret }}
- name: FORLOP_LOG_MASK_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.logMasking.existingSecret | quote }}
      key: {{ $v.logMasking.key | quote }}
{{- end }}
- name: FORLOP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret | quote }}
      key: {{ $v.database.urlKey | quote }}
{{- if and .component (hasPrefix "SASL" $v.kafka.securityProtocol) }}
{{- if $v.kafka.sasl.strimziUserSecrets }}
{{- $user := printf "%s-%s" (include "forlop.fullname" .root) .component }}
- name: FORLOP_KAFKA_SASL_USERNAME
  value: {{ $user | quote }}
- name: FORLOP_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $user | quote }}
      key: password
{{- else }}
{{- if $v.kafka.sasl.usernameKey }}
- name: FORLOP_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret | quote }}
      key: {{ $v.kafka.sasl.usernameKey | quote }}
{{- else }}
- name: FORLOP_KAFKA_SASL_USERNAME
  value: {{ default (printf "%s-%s" (include "forlop.fullname" .root) .component) $v.kafka.sasl.username | quote }}
{{- end }}
- name: FORLOP_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret | quote }}
      key: {{ $v.kafka.sasl.passwordKey | quote }}
{{- end }}
{{- end }}
{{- if eq .component "api" }}
{{- if include "forlop.tenantsConfigMap" .root }}
- name: FORLOP_TENANTS
  value: {{ printf "/etc/forlop/tenants/%s" $v.tenants.key | quote }}
{{- end }}
{{- if $v.jwt.existingSecret }}
- name: FORLOP_JWT_ISSUER
  valueFrom:
    secretKeyRef:
      name: {{ $v.jwt.existingSecret | quote }}
      key: {{ $v.jwt.issuerKey | quote }}
- name: FORLOP_JWT_AUDIENCE
  valueFrom:
    secretKeyRef:
      name: {{ $v.jwt.existingSecret | quote }}
      key: {{ $v.jwt.audienceKey | quote }}
- name: FORLOP_JWT_JWKS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.jwt.existingSecret | quote }}
      key: {{ $v.jwt.jwksUrlKey | quote }}
{{- else }}
{{- with $v.jwt.issuer }}
- name: FORLOP_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with $v.jwt.audience }}
- name: FORLOP_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- with $v.jwt.jwksUrl }}
- name: FORLOP_JWT_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Security contexts, the same for every pod and container of the chart. */}}
{{- define "forlop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "forlop.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Volumes shared by the forlop containers: a writable /tmp, an XSD override, the Kafka CA. */}}
{{/* The ConfigMap holding the tenant registry: the chart's own, else tenants.existingConfigMap ("": none). */}}
{{- define "forlop.tenantsConfigMap" -}}
{{- if .Values.tenants.registry -}}
{{ include "forlop.fullname" . }}-tenants
{{- else -}}
{{ .Values.tenants.existingConfigMap }}
{{- end -}}
{{- end -}}

{{- define "forlop.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
{{- if and .tenants (include "forlop.tenantsConfigMap" .root) }}
- name: tenants
  configMap:
    name: {{ include "forlop.tenantsConfigMap" .root | quote }}
    items:
      - key: {{ .root.Values.tenants.key | quote }}
        path: {{ .root.Values.tenants.key | quote }}
{{- end }}
{{- if .root.Values.xsd.override }}
- name: xsd
  {{- toYaml .root.Values.xsd.volume | nindent 2 }}
{{- end }}
{{- if and .kafka .root.Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.tls.caSecret | quote }}
    items:
      - key: {{ .root.Values.kafka.tls.caKey | quote }}
        path: {{ .root.Values.kafka.tls.caKey | quote }}
{{- end }}
{{- end -}}

{{- define "forlop.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and .tenants (include "forlop.tenantsConfigMap" .root) }}
- name: tenants
  mountPath: /etc/forlop/tenants
  readOnly: true
{{- end }}
{{- if .root.Values.xsd.override }}
- name: xsd
  mountPath: /etc/forlop/xsd
  readOnly: true
{{- end }}
{{- if and .kafka .root.Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/forlop/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}
