{{/* One egress rule to CIDRs and/or peers on TCP ports. Call with (dict "target" .Values.networkPolicy.kafka).
     No CIDRs and no peers: the ports are open to any destination. */}}
{{- define "forlop.egressRule" -}}
- ports:
    {{- range .target.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- if or .target.cidrs .target.peers }}
  to:
    {{- range .target.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with .target.peers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end -}}

{{- define "forlop.dnsEgressRule" -}}
- ports:
    {{- range .Values.networkPolicy.dns.ports }}
    - protocol: UDP
      port: {{ . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .Values.networkPolicy.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
