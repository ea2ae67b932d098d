{{/*
The public named templates: what a parent chart includes in its own Pod template to add Gleaner
as a sidecar (see README.md, "Use it from your own chart"). Each takes as its one argument either
this chart's values — `.Values.gleaner` in a parent chart (the dependency's name or alias) — or a
context holding them with the cluster's capabilities, `(dict "Values" .Values.gleaner
"Capabilities" .Capabilities)` (this chart's own templates pass their root context, which has
both), so that an unset kubernetesVersion can be the cluster's. Each renders YAML to be indented
with `nindent`. Nothing is added to a Pod that does not include them.

  gleaner.initContainers          the Gleaner container if sidecar.flavour is native, else nothing
  gleaner.containers              the Gleaner container if sidecar.flavour is classic, else nothing
  gleaner.container               the Gleaner container, whatever the flavour (a list item), with extraVolumeMounts
  gleaner.volumeMounts            the emitter's mount of the shared volume (a list item)
  gleaner.volumes                 the shared emptyDir, with its size limit, and extraVolumes (list items)
  gleaner.podSecurityContext      the Pod's securityContext (fsGroup, so Gleaner can read and delete)
  gleaner.terminationGracePeriodSeconds  the grace period, checked against the stop times
  gleaner.podLabels               labels the Pod needs (Azure Workload Identity) and podLabels, maybe none
  gleaner.podAnnotations          annotations the Pod needs (the Cluster Autoscaler's, for the emptyDir) and podAnnotations
  gleaner.imagePullSecrets        imagePullSecrets as list items ({name: …}), maybe none
  gleaner.serviceAccountAnnotations  annotations for your ServiceAccount (IRSA, GKE, Azure)
*/}}

{{- define "gleaner.initContainers" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- if eq $v.sidecar.flavour "native" -}}
{{ include "gleaner.container" . }}
{{- end -}}
{{- end -}}

{{- define "gleaner.containers" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- if eq $v.sidecar.flavour "classic" -}}
{{ include "gleaner.container" . }}
{{- end -}}
{{- end -}}

{{- define "gleaner.container" -}}
{{- include "gleaner.validate" . -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- $cron := eq $v.mode "cronjob" -}}
{{- $native := and (not $cron) (eq $v.sidecar.flavour "native") -}}
- name: gleaner
  image: {{ include "gleaner.image" $v | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $native }}
  # A native sidecar: started before the emitter, stopped after it (Kubernetes >= 1.29).
  restartPolicy: Always
  {{- end }}
  # Every setting is an environment variable (GLEANER_*, as `gleaner run --help` lists them), not a
  # flag, so that a `kubectl exec … -- gleaner state inspect` in this container, which inherits
  # them, needs no flags (the image has no shell). Flags given in run.extraArgs come on top.
  args:
    - run
    {{- if $cron }}
    - --once
    {{- end }}
    {{- range $v.run.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- if $v.run.sourceId }}
    - name: GLEANER_SOURCE_ID
      value: {{ $v.run.sourceId | quote }}
    {{- else if eq $v.run.sourceIdScope "pod" }}
    # The source id is the Pod's name (run.sourceIdScope pod: unique per Pod in one namespace).
    - name: GLEANER_SOURCE_ID
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- else }}
    # The source id is {{ with $v.clusterName }}the cluster's name, {{ end }}the Pod's namespace and name: unique across
    # namespaces{{ if $v.clusterName }} and clusters{{ end }} sharing a state location; stable for a StatefulSet's Pod.
    - name: GLEANER_POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: GLEANER_POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: GLEANER_SOURCE_ID
      value: "{{ with $v.clusterName }}{{ . }}.{{ end }}$(GLEANER_POD_NAMESPACE).$(GLEANER_POD_NAME)"
    {{- end }}
    - name: GLEANER_WATCH
      value: {{ $v.volume.mountPath | quote }}
    - name: GLEANER_STATE
      value: {{ $v.run.state | quote }}
    - name: GLEANER_OUTPUT
      value: {{ $v.run.output | quote }}
    - name: GLEANER_PROCESSOR
      value: {{ $v.run.processor | quote }}
    - name: GLEANER_MIN_AGE
      value: {{ $v.run.minAge | quote }}
    {{- if not $cron }}
    - name: GLEANER_INTERVAL
      value: {{ $v.run.interval | quote }}
    {{- end }}
    - name: GLEANER_COMPRESS
      value: {{ $v.run.compress | quote }}
    - name: GLEANER_OUTPUT_LAYOUT
      value: {{ $v.run.outputLayout | quote }}
    {{- include "gleaner.labelsEnv" $v.run.labels }}
    {{- if $cron }}
    - name: GLEANER_AFTER
      value: {{ $v.cronjob.after | quote }}
    {{- with $v.cronjob.minFree }}
    - name: GLEANER_MIN_FREE
      value: {{ . | quote }}
    {{- end }}
    {{- with $v.cronjob.watchCapacity }}
    # cronjob.watchCapacity ({{ . }}) in bytes: each run warns in its log from 80 %.
    - name: GLEANER_WATCH_CAPACITY
      value: {{ include "gleaner.bytes" (list "cronjob.watchCapacity" .) | quote }}
    {{- end }}
    {{- else }}
    - name: GLEANER_AFTER
      value: {{ $v.sidecar.after | quote }}
    {{- $limit := int64 (include "gleaner.bytes" (list "sidecar.emptyDir.sizeLimit" $v.sidecar.emptyDir.sizeLimit)) }}
    # The emptyDir's sizeLimit ({{ $v.sidecar.emptyDir.sizeLimit }}) in bytes: past it the kubelet evicts the Pod
    # without a drain. Gleaner measures the directory against it (gleaner_watch_bytes).
    - name: GLEANER_WATCH_CAPACITY
      value: {{ $limit | quote }}
    {{- if gt (int $v.sidecar.minFreePercent) 0 }}
    {{- $minFree := div (mul $limit (int64 $v.sidecar.minFreePercent)) 100 }}
    # Free space of the file system under the emptyDir: on disk, the node's disk.
    - name: GLEANER_MIN_FREE
      value: {{ ge $minFree 1048576 | ternary (printf "%dMiB" (div $minFree 1048576)) (toString $minFree) | quote }}
    {{- end }}
    {{- if $native }}
    # A native sidecar gets SIGTERM after the emitter exited: every file is final.
    - name: GLEANER_DRAIN
      value: writer-gone
    {{- else }}
    # A classic sidecar gets SIGTERM with the emitter: wait for the emitter's last files.
    - name: GLEANER_DRAIN
      value: wait
    {{- end }}
    {{- if $v.sidecar.shipLeftovers }}
    - name: GLEANER_SHIP_LEFTOVERS
      value: "true"
    {{- end }}
    - name: GLEANER_METRICS_ADDR
      value: {{ printf "0.0.0.0:%d" (int $v.metrics.port) | quote }}
    - name: GLEANER_SHUTDOWN_TIMEOUT
      value: {{ $v.run.shutdownTimeout | quote }}
    - name: GLEANER_STALL_TIMEOUT
      value: {{ $v.run.stallTimeout | quote }}
    {{- end }}
    - name: GLEANER_LOG_FORMAT
      value: {{ $v.run.logFormat | quote }}
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
  {{- if and $native (not $v.sidecar.gateAppStart) }}
  # No startupProbe (sidecar.gateAppStart false): the kubelet starts the application as soon as
  # this container runs, and does not hold it while Gleaner fails to start.
  {{- else }}
  {{- if $native }}
  # The startup probe gates the application's start (sidecar.gateAppStart): the kubelet starts it
  # once Gleaner answers.
  {{- end }}
  startupProbe:
    httpGet:
      path: /livez
      port: {{ $v.metrics.portName }}
    periodSeconds: {{ $v.probes.startup.periodSeconds }}
    failureThreshold: {{ $v.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /livez
      port: {{ $v.metrics.portName }}
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
  {{- end }}
  {{- $resources := deepCopy $v.resources }}
  {{- if and (not $cron) (eq $v.sidecar.emptyDir.medium "") (not (hasKey $resources.requests "ephemeral-storage")) }}
  {{- $_ := set $resources.requests "ephemeral-storage" $v.sidecar.emptyDir.sizeLimit }}
  # requests.ephemeral-storage: the emptyDir's sizeLimit, so that the scheduler places the Pod where
  # the volume can grow to it.
  {{- end }}
  resources:
    {{- toYaml $resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: {{ $v.volume.name }}
      mountPath: {{ $v.volume.mountPath }}
      {{- if and $cron $v.cronjob.persistentVolumeClaim.subPath }}
      subPath: {{ $v.cronjob.persistentVolumeClaim.subPath }}
      {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "gleaner.volumeMounts" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
- name: {{ $v.volume.name }}
  mountPath: {{ $v.volume.mountPath }}
{{- end -}}

{{- define "gleaner.volumes" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
- name: {{ $v.volume.name }}
  emptyDir:
    {{- with $v.sidecar.emptyDir.medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: {{ $v.sidecar.emptyDir.sizeLimit }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gleaner.podSecurityContext" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- toYaml $v.podSecurityContext -}}
{{- end -}}

{{- define "gleaner.terminationGracePeriodSeconds" -}}
{{- include "gleaner.validateSidecar" . -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- $v.sidecar.terminationGracePeriodSeconds -}}
{{- end -}}

{{- define "gleaner.podLabels" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- $l := dict -}}
{{- if $v.serviceAccount.azureClientId -}}{{- $_ := set $l "azure.workload.identity/use" "true" -}}{{- end -}}
{{- $l = merge $l $v.podLabels -}}
{{- if $l }}{{ toYaml $l }}{{ end -}}
{{- end -}}

{{/*
The Pod's imagePullSecrets, as list items ({name: …}): imagePullSecrets, plain names made objects.
*/}}
{{- define "gleaner.imagePullSecrets" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- $l := list -}}
{{- range $v.imagePullSecrets -}}
{{- $l = append $l (dict "name" (kindIs "string" . | ternary . (get (kindIs "map" . | ternary . dict) "name"))) -}}
{{- end -}}
{{- if $l }}{{ toYaml $l }}{{ end -}}
{{- end -}}

{{/*
The Cluster Autoscaler does not scale down a node whose Pods have local volumes (an emptyDir)
unless each such Pod lists them as safe to evict: evicting the Pod stops it normally, and Gleaner
drains its emptyDir within the grace period.
*/}}
{{- define "gleaner.podAnnotations" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- $a := dict -}}
{{- if ne $v.mode "cronjob" -}}
{{- $_ := set $a "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes" $v.volume.name -}}
{{- end -}}
{{- $a = merge $a $v.podAnnotations -}}
{{- if $a }}{{ toYaml $a }}{{ end -}}
{{- end -}}

{{- define "gleaner.serviceAccountAnnotations" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- $a := dict -}}
{{- with $v.serviceAccount.awsRoleArn }}{{ $_ := set $a "eks.amazonaws.com/role-arn" . }}{{ end -}}
{{- with $v.serviceAccount.gcpServiceAccount }}{{ $_ := set $a "iam.gke.io/gcp-service-account" . }}{{ end -}}
{{- with $v.serviceAccount.azureClientId }}{{ $_ := set $a "azure.workload.identity/client-id" . }}{{ end -}}
{{- $a = merge $a $v.serviceAccount.annotations -}}
{{- if $a }}{{ toYaml $a }}{{ end -}}
{{- end -}}
