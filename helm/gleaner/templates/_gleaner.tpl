{{/*
The public named templates: what a parent chart includes in its own Pod template to add Gleaner
as a sidecar (see README.md, "Use it from your own chart"). Each takes this chart's values as its
argument — `.Values.gleaner` in a parent chart (the dependency's name or alias), `.Values` in this
chart's own templates, which use the same templates — and renders YAML to be indented with
`nindent`. Nothing is added to a Pod that does not include them.

  gleaner.initContainers          the Gleaner container if sidecar.flavour is native, else nothing
  gleaner.containers              the Gleaner container if sidecar.flavour is classic, else nothing
  gleaner.container               the Gleaner container, whatever the flavour (a list item)
  gleaner.volumeMounts            the emitter's mount of the shared volume (a list item)
  gleaner.volumes                 the shared emptyDir, with its size limit (a list item)
  gleaner.podSecurityContext      the Pod's securityContext (fsGroup, so Gleaner can read and delete)
  gleaner.terminationGracePeriodSeconds  the grace period, checked against the stop times
  gleaner.podLabels               labels the Pod needs (Azure Workload Identity), maybe none
  gleaner.serviceAccountAnnotations  annotations for your ServiceAccount (IRSA, GKE, Azure)
*/}}

{{- define "gleaner.initContainers" -}}
{{- if eq .sidecar.flavour "native" -}}
{{ include "gleaner.container" . }}
{{- end -}}
{{- end -}}

{{- define "gleaner.containers" -}}
{{- if eq .sidecar.flavour "classic" -}}
{{ include "gleaner.container" . }}
{{- end -}}
{{- end -}}

{{- define "gleaner.container" -}}
{{- include "gleaner.validate" . -}}
{{- $v := . -}}
{{- $cron := eq $v.mode "cronjob" -}}
{{- $native := and (not $cron) (eq $v.sidecar.flavour "native") -}}
- name: gleaner
  image: {{ include "gleaner.image" $v | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $native }}
  # A native sidecar: started before the emitter, stopped after it (Kubernetes >= 1.29).
  restartPolicy: Always
  {{- end }}
  args:
    - run
    {{- if $cron }}
    - --once
    {{- end }}
    - --watch={{ $v.volume.mountPath }}
    - --state={{ $v.run.state }}
    - --output={{ $v.run.output }}
    {{- with $v.run.sourceId }}
    - --source-id={{ . }}
    {{- end }}
    - --processor={{ $v.run.processor }}
    - --min-age={{ $v.run.minAge }}
    {{- if not $cron }}
    - --interval={{ $v.run.interval }}
    {{- end }}
    - --compress={{ $v.run.compress }}
    - --output-layout={{ $v.run.outputLayout }}
    {{- if $cron }}
    - --after={{ $v.cronjob.after }}
    {{- with $v.cronjob.minFree }}
    - --min-free={{ . }}
    {{- end }}
    {{- with $v.cronjob.watchCapacity }}
    # cronjob.watchCapacity ({{ . }}) in bytes: each run warns in its log from 80 %.
    - --watch-capacity={{ include "gleaner.bytes" (list "cronjob.watchCapacity" .) }}
    {{- end }}
    {{- else }}
    - --after={{ $v.sidecar.after }}
    {{- $limit := int64 (include "gleaner.bytes" (list "sidecar.emptyDir.sizeLimit" $v.sidecar.emptyDir.sizeLimit)) }}
    # The emptyDir's sizeLimit ({{ $v.sidecar.emptyDir.sizeLimit }}) in bytes: past it the kubelet evicts the Pod
    # without a drain. Gleaner measures the directory against it (gleaner_watch_bytes).
    - --watch-capacity={{ $limit }}
    {{- if gt (int $v.sidecar.minFreePercent) 0 }}
    {{- $minFree := div (mul $limit (int64 $v.sidecar.minFreePercent)) 100 }}
    # Free space of the file system under the emptyDir: on disk, the node's disk.
    - --min-free={{ ge $minFree 1048576 | ternary (printf "%dMiB" (div $minFree 1048576)) (toString $minFree) }}
    {{- end }}
    {{- if $native }}
    # A native sidecar gets SIGTERM after the emitter exited: every file is final.
    - --drain=writer-gone
    {{- else }}
    # A classic sidecar gets SIGTERM with the emitter: wait for the emitter's last files.
    - --drain=wait
    {{- end }}
    {{- if $v.sidecar.shipLeftovers }}
    - --ship-leftovers
    {{- end }}
    - --metrics-addr=0.0.0.0:{{ $v.metrics.port }}
    - --shutdown-timeout={{ $v.run.shutdownTimeout }}
    - --stall-timeout={{ $v.run.stallTimeout }}
    {{- end }}
    - --log-format={{ $v.run.logFormat }}
    {{- range $v.run.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- if or (not $v.run.sourceId) $v.credentials.secretEnv $v.run.extraEnv }}
  env:
    {{- if not $v.run.sourceId }}
    # The source id is the Pod's name (unique per Pod; stable for a StatefulSet's Pod).
    - name: GLEANER_SOURCE_ID
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- end }}
    {{- range $v.credentials.secretEnv }}
    - name: {{ .name }}
      valueFrom:
        secretKeyRef:
          name: {{ .secretName }}
          key: {{ .key }}
    {{- end }}
    {{- with $v.run.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with $v.credentials.envFromSecrets }}
  envFrom:
    {{- range . }}
    - secretRef:
        name: {{ . }}
    {{- end }}
  {{- end }}
  {{- if not $cron }}
  ports:
    - name: {{ $v.metrics.portName }}
      containerPort: {{ $v.metrics.port }}
      protocol: TCP
  # No readinessProbe, on purpose: a sidecar's readiness gates the whole Pod's Service endpoints,
  # and a storage outage must not take the emitter out of its Service.
  startupProbe:
    httpGet:
      path: /livez
      port: {{ $v.metrics.portName }}
    periodSeconds: {{ $v.probes.startup.periodSeconds }}
    failureThreshold: {{ $v.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
  livenessProbe:
    httpGet:
      path: /livez
      port: {{ $v.metrics.portName }}
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
  {{- end }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ $v.volume.name }}
      mountPath: {{ $v.volume.mountPath }}
      {{- if and $cron $v.cronjob.persistentVolumeClaim.subPath }}
      subPath: {{ $v.cronjob.persistentVolumeClaim.subPath }}
      {{- end }}
{{- end -}}

{{- define "gleaner.volumeMounts" -}}
- name: {{ .volume.name }}
  mountPath: {{ .volume.mountPath }}
{{- end -}}

{{- define "gleaner.volumes" -}}
- name: {{ .volume.name }}
  emptyDir:
    {{- with .sidecar.emptyDir.medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: {{ .sidecar.emptyDir.sizeLimit }}
{{- end -}}

{{- define "gleaner.podSecurityContext" -}}
{{- toYaml .podSecurityContext -}}
{{- end -}}

{{- define "gleaner.terminationGracePeriodSeconds" -}}
{{- include "gleaner.validateSidecar" . -}}
{{- .sidecar.terminationGracePeriodSeconds -}}
{{- end -}}

{{- define "gleaner.podLabels" -}}
{{- if .serviceAccount.azureClientId -}}
azure.workload.identity/use: "true"
{{- end -}}
{{- end -}}

{{- define "gleaner.serviceAccountAnnotations" -}}
{{- $a := dict -}}
{{- with .serviceAccount.awsRoleArn }}{{ $_ := set $a "eks.amazonaws.com/role-arn" . }}{{ end -}}
{{- with .serviceAccount.gcpServiceAccount }}{{ $_ := set $a "iam.gke.io/gcp-service-account" . }}{{ end -}}
{{- with .serviceAccount.azureClientId }}{{ $_ := set $a "azure.workload.identity/client-id" . }}{{ end -}}
{{- $a = merge $a .serviceAccount.annotations -}}
{{- if $a }}{{ toYaml $a }}{{ end -}}
{{- end -}}
