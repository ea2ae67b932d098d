{{/*
Internal helpers. The public named templates, which a parent chart includes, are in _gleaner.tpl.
Helpers whose argument is "the values" take this chart's values: `.Values` here, `.Values.gleaner`
in a parent chart.
*/}}

{{- define "gleaner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gleaner.fullname" -}}
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

{{/*
The name of the monitoring objects (PodMonitor, PrometheusRules, dashboard ConfigMap): the full
name, with `-gleaner` added when it does not contain "gleaner" (a nameOverride, a
fullnameOverride, or a parent chart's alias of this chart). prometheus-operator names a
PodMonitor's scrape job `<namespace>/<PodMonitor name>`, and GleanerDown and the availability SLO
select `up{job=~".*gleaner.*"}`: a PodMonitor without "gleaner" in its name would be invisible to
them.
*/}}
{{- define "gleaner.monitoringName" -}}
{{- $name := include "gleaner.fullname" . -}}
{{- if contains "gleaner" $name -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-gleaner" ($name | trunc 55 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{- define "gleaner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gleaner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}

{{- define "gleaner.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gleaner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gleaner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gleaner.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gleaner.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository .image.tag -}}
{{- end -}}
{{- end -}}

{{/*
A duration as Gleaner takes it (`500ms`, `30s`, `15m`, `1h`; the schema allows one number and one
unit) in whole seconds, rounded up. Argument: (list "value.path" "25s"), the path for messages.
*/}}
{{- define "gleaner.seconds" -}}
{{- $path := index . 0 -}}
{{- $d := toString (index . 1) -}}
{{- $digits := regexFind "^[0-9]+" $d -}}
{{- $unit := trimPrefix $digits $d -}}
{{- if not $digits -}}
{{- fail (printf "%s: %q is not a duration like 500ms, 30s, 15m or 1h" $path $d) -}}
{{- end -}}
{{- $n := int64 $digits -}}
{{- if eq $unit "ms" -}}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "s" -}}{{ $n }}
{{- else if eq $unit "m" -}}{{ mul $n 60 }}
{{- else if eq $unit "h" -}}{{ mul $n 3600 }}
{{- else -}}{{ fail (printf "%s: %q is not a duration like 500ms, 30s, 15m or 1h" $path $d) }}
{{- end -}}
{{- end -}}

{{/*
A Kubernetes quantity of bytes (`1Gi`, `512Mi`, `500M`, `1000000`) in bytes. Argument: (list
"value.path" "1Gi").
*/}}
{{- define "gleaner.bytes" -}}
{{- $path := index . 0 -}}
{{- $q := toString (index . 1) -}}
{{- $digits := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $digits $q -}}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (not $digits) (not (hasKey $factors $unit)) -}}
{{- fail (printf "%s: %q is not a size like 512Mi or 1Gi" $path $q) -}}
{{- end -}}
{{- mul (int64 $digits) (index $factors $unit) -}}
{{- end -}}

{{/*
A storage URL: required, and never with credentials in it. Argument: (list "run.state" URL).
*/}}
{{- define "gleaner.checkUrl" -}}
{{- $path := index . 0 -}}
{{- $url := index . 1 -}}
{{- if not $url -}}
{{- fail (printf "%s is required: where Gleaner keeps its %s, like s3://bucket/gleaner/%s, gs://…, az://… or file:///…" $path (ternary "state" "results" (eq $path "run.state")) (ternary "state" "results" (eq $path "run.state"))) -}}
{{- end -}}
{{- if or (regexMatch "^[a-z0-9]+://[^/]*@" $url) (contains "?" $url) (contains "#" $url) -}}
{{- fail (printf "%s must not carry credentials (user info, a query such as a SAS token, or a fragment): Gleaner refuses such URLs. Put the credentials in a Secret and name it in credentials.secretEnv or credentials.envFromSecrets, or use workload identity (serviceAccount.awsRoleArn, gcpServiceAccount, azureClientId)" $path) -}}
{{- end -}}
{{- end -}}

{{/*
Every check of the values that the schema cannot express. Argument: the values. Renders nothing
or fails with a message that says what to change.
*/}}
{{- define "gleaner.validate" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- include "gleaner.checkUrl" (list "run.state" $v.run.state) -}}
{{- include "gleaner.checkUrl" (list "run.output" $v.run.output) -}}
{{- if and (eq $v.mode "cronjob") (not $v.run.sourceId) -}}
{{- fail "cronjob mode needs run.sourceId: every Job's Pod has a new name, so the default source id (the Pod's name) would start a new state at every run and process every file again. Set run.sourceId to a stable name, like the claim's" -}}
{{- end -}}
{{- if and (eq $v.mode "cronjob") (not $v.cronjob.persistentVolumeClaim.claimName) -}}
{{- fail "cronjob mode needs cronjob.persistentVolumeClaim.claimName: the name of an existing PersistentVolumeClaim holding the files to collect" -}}
{{- end -}}
{{- if and $v.clusterName (eq $v.run.sourceIdScope "pod") (not $v.run.sourceId) -}}
{{- fail (printf "clusterName %q qualifies the default source id, and run.sourceIdScope pod makes it the bare Pod name: unset one of them (run.sourceIdScope pod keeps the source ids of Pods made before the namespace was part of them)" $v.clusterName) -}}
{{- end -}}
{{- if and (eq $v.mode "example") $v.run.sourceId (gt (int $v.example.replicas) 1) -}}
{{- fail (printf "run.sourceId %q with example.replicas %d: every Pod needs its own source id (two Pods under one id fence each other off, exit 3). Leave run.sourceId empty to use each Pod's name" $v.run.sourceId (int $v.example.replicas)) -}}
{{- end -}}
{{- $reserved := list "run" "--watch" "--state" "--output" "--source-id" "--processor" "--min-age" "--interval" "--compress" "--output-layout" "--shutdown-timeout" "--stall-timeout" "--log-format" "--after" "--min-free" "--watch-capacity" "--drain" "--metrics-addr" "--ship-leftovers" "--once" "--label" "--partition-label" -}}
{{- range $v.run.extraArgs -}}
{{- $flag := regexReplaceAll "=.*$" (toString .) "" -}}
{{- if has $flag $reserved -}}
{{- fail (printf "run.extraArgs: %s is set by the chart (from its own value: see the chart's README); given here too, the flag would silently override the chart's setting (a flag wins over its GLEANER_ variable)" $flag) -}}
{{- end -}}
{{- end -}}
{{- $secretNames := list "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" "AZURE_STORAGE_ACCOUNT_KEY" "AZURE_STORAGE_ACCESS_KEY" "AZURE_STORAGE_SAS_KEY" "AZURE_STORAGE_TOKEN" "AZURE_CLIENT_SECRET" "GOOGLE_SERVICE_ACCOUNT_KEY" -}}
{{- $chartEnv := list "GLEANER_SOURCE_ID" "GLEANER_WATCH" "GLEANER_STATE" "GLEANER_OUTPUT" "GLEANER_PROCESSOR" "GLEANER_MIN_AGE" "GLEANER_INTERVAL" "GLEANER_COMPRESS" "GLEANER_OUTPUT_LAYOUT" "GLEANER_AFTER" "GLEANER_MIN_FREE" "GLEANER_WATCH_CAPACITY" "GLEANER_DRAIN" "GLEANER_SHIP_LEFTOVERS" "GLEANER_METRICS_ADDR" "GLEANER_SHUTDOWN_TIMEOUT" "GLEANER_STALL_TIMEOUT" "GLEANER_LOG_FORMAT" "GLEANER_ONCE" "GLEANER_POD_NAME" "GLEANER_POD_NAMESPACE" "GLEANER_LABELS" "GLEANER_PARTITION_LABELS" -}}
{{- range $v.run.extraEnv -}}
{{- if or (has .name $chartEnv) (hasPrefix "GLEANER_LABEL_" .name) -}}
{{- fail (printf "run.extraEnv: %s is set by the chart (from its own value: see the chart's README); set that value instead (two definitions of one variable: the last would silently win)" .name) -}}
{{- end -}}
{{- if and (has .name $secretNames) (hasKey . "value") -}}
{{- fail (printf "run.extraEnv: %s is given as a literal value; a secret's value never goes in the chart's values (it would be stored in the release and shown by helm get values). Put it in a Secret and reference it: credentials.secretEnv: [{name: %s, secretName: SECRET, key: KEY}]" .name .name) -}}
{{- end -}}
{{- end -}}
{{- include "gleaner.validateLabels" $v -}}
{{- $volumes := list -}}
{{- range $v.extraVolumes -}}
{{- if eq .name $v.volume.name -}}
{{- fail (printf "extraVolumes: %s is the shared volume's name (volume.name): give the extra volume another name" .name) -}}
{{- end -}}
{{- $volumes = append $volumes .name -}}
{{- end -}}
{{- range $v.extraVolumeMounts -}}
{{- if eq (trimSuffix "/" .mountPath) (trimSuffix "/" $v.volume.mountPath) -}}
{{- fail (printf "extraVolumeMounts: %s is the watched directory (volume.mountPath): mount the extra volume elsewhere" .mountPath) -}}
{{- end -}}
{{- if and (ne $v.mode "library") (not (has .name $volumes)) -}}
{{- fail (printf "extraVolumeMounts: no volume %s in extraVolumes (the Pods this chart renders have only the shared volume and extraVolumes)" .name) -}}
{{- end -}}
{{- end -}}
{{- if ne $v.mode "cronjob" -}}
{{- include "gleaner.validateSidecar" . -}}
{{- end -}}
{{- end -}}

{{/*
The Kubernetes version the sidecar is rendered for: kubernetesVersion, or when it is empty the
cluster's (.Capabilities.KubeVersion: what `helm install` finds, `helm template --kube-version`,
else Helm's default). Argument: the values, or a context with Values and Capabilities; with the
values alone the capabilities are out of reach, and an empty kubernetesVersion fails the render.
*/}}
{{- define "gleaner.kubeVersion" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- if not (kindIs "string" $v.kubernetesVersion) -}}
{{- fail (printf "kubernetesVersion must be a quoted string, like \"1.30\" (--set-string kubernetesVersion=1.30): as a number, 1.30 is 1.3 (got %v)" $v.kubernetesVersion) -}}
{{- end -}}
{{- if $v.kubernetesVersion -}}
{{- $v.kubernetesVersion -}}
{{- else if hasKey . "Capabilities" -}}
{{- .Capabilities.KubeVersion.Version -}}
{{- else -}}
{{- fail "kubernetesVersion is empty, and the named template got the chart's values alone, without the cluster's capabilities: pass (dict \"Values\" .Values.gleaner \"Capabilities\" .Capabilities) instead of .Values.gleaner (see the chart's README, \"Use it from your own chart\"), or set kubernetesVersion to your cluster's version" -}}
{{- end -}}
{{- end -}}

{{- define "gleaner.validateSidecar" -}}
{{- $v := . -}}{{- if hasKey . "Capabilities" -}}{{- $v = .Values -}}{{- end -}}
{{- $s := $v.sidecar -}}
{{- $kube := include "gleaner.kubeVersion" . -}}
{{- if and (eq $s.flavour "native") (not (semverCompare ">=1.29.0-0" $kube)) -}}
{{- fail (printf "sidecar.flavour native needs Kubernetes 1.29 or newer (an init container with restartPolicy: Always), and %s. On 1.28 and older set sidecar.flavour: classic (a regular container that drains with --drain wait); if your cluster is newer, set kubernetesVersion to its version" (ternary (printf "kubernetesVersion is %s" $kube) (printf "the cluster is %s (.Capabilities.KubeVersion: helm template without --kube-version assumes Helm's default)" $kube) (ne (toString $v.kubernetesVersion) ""))) -}}
{{- end -}}
{{- $stop := int64 (include "gleaner.seconds" (list "sidecar.emitterStopTime" $s.emitterStopTime)) -}}
{{- $timeout := int64 (include "gleaner.seconds" (list "run.shutdownTimeout" $v.run.shutdownTimeout)) -}}
{{- $margin := int64 (include "gleaner.seconds" (list "sidecar.graceMargin" $s.graceMargin)) -}}
{{- $minAge := int64 (include "gleaner.seconds" (list "run.minAge" $v.run.minAge)) -}}
{{- $grace := int64 $s.terminationGracePeriodSeconds -}}
{{- if eq $s.flavour "native" -}}
{{- $need := add $stop $timeout $margin -}}
{{- if lt $grace $need -}}
{{- fail (printf "sidecar.terminationGracePeriodSeconds %d is too short for a native sidecar: Gleaner gets SIGTERM only after the emitter exited, so the Pod needs the emitter's stop time (sidecar.emitterStopTime %ds) + Gleaner's drain (run.shutdownTimeout %ds) + a margin (sidecar.graceMargin %ds) = %d s. Raise it to at least %d, or lower run.shutdownTimeout" $grace $stop $timeout $margin $need $need) -}}
{{- end -}}
{{- else -}}
{{- $need := add (max $stop $timeout) $margin -}}
{{- if lt $grace $need -}}
{{- fail (printf "sidecar.terminationGracePeriodSeconds %d is too short for a classic sidecar: the emitter and Gleaner stop together, so the Pod needs max(sidecar.emitterStopTime %ds, run.shutdownTimeout %ds) + a margin (sidecar.graceMargin %ds) = %d s. Raise it to at least %d" $grace $stop $timeout $margin $need $need) -}}
{{- end -}}
{{- $last := add $stop $minAge $margin -}}
{{- if lt $timeout $last -}}
{{- fail (printf "run.shutdownTimeout %ds is too short for a classic sidecar: Gleaner drains while the emitter stops, and the emitter's last file is complete after sidecar.emitterStopTime (%ds) and ready after run.minAge (%ds) more; with a margin (sidecar.graceMargin %ds) the drain needs %d s, or that file is left in the emptyDir and lost with the Pod. Raise run.shutdownTimeout to at least %ds (and the grace period with it)" $timeout $stop $minAge $margin $last $last) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Where the Pods this chart renders run (`example` and `cronjob` modes): priorityClassName,
nodeSelector, tolerations, affinity, topologySpreadConstraints, each when set. Argument: the
values.
*/}}
{{- define "gleaner.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Checks run.labels beyond the schema: one key, one label; partitions are labels, of the hive
layout, with a value (an empty folder name cannot be a partition). Argument: the values.
*/}}
{{- define "gleaner.validateLabels" -}}
{{- $l := .run.labels -}}
{{- $keys := list -}}
{{- range $key := list "pod" "namespace" "node" -}}
{{- if get $l $key -}}{{- $keys = append $keys $key -}}{{- end -}}
{{- end -}}
{{- $reserved := list "schema" "source_id" "generation" "path" "path_bytes" "size" "encoding" "mtime" "start" "processor" "result" "error" "identity" "labels" "source" "date" -}}
{{- range $from := list "fromPodLabels" "static" -}}
{{- range $key, $_ := get $l $from -}}
{{- if has $key $reserved -}}
{{- fail (printf "run.labels.%s: the label key %s is reserved: it names a field of the result line or a partition of the hive layout (reserved: %s)" $from $key (join ", " $reserved)) -}}
{{- end -}}
{{- if has $key $keys -}}
{{- fail (printf "run.labels.%s: the label %s is given twice (a line has one value per key): set run.labels.%s to false, or use another key" $from $key $key) -}}
{{- end -}}
{{- $keys = append $keys $key -}}
{{- end -}}
{{- end -}}
{{- range $l.partitions -}}
{{- if ne $.run.outputLayout "hive" -}}
{{- fail (printf "run.labels.partitions: %s is a folder of the hive layout: set run.outputLayout to hive" .) -}}
{{- end -}}
{{- if not (has . $keys) -}}
{{- fail (printf "run.labels.partitions: %s is not a label: enable it (pod, namespace, node) or give it in run.labels.fromPodLabels or run.labels.static" .) -}}
{{- end -}}
{{- if and (hasKey $l.static .) (eq (get $l.static .) "") -}}
{{- fail (printf "run.labels.partitions: the static label %s is empty, which cannot name a folder" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The environment that labels every result line (run.labels): the Pod's name, namespace and node
and the chosen Pod labels through the downward API, each in a GLEANER_LABEL_<KEY> variable, all
joined into GLEANER_LABELS by $(VAR) references; GLEANER_PARTITION_LABELS for the partitions.
Argument: run.labels.
*/}}
{{- define "gleaner.labelsEnv" -}}
{{- $pairs := list -}}
{{- range $key, $path := dict "pod" "metadata.name" "namespace" "metadata.namespace" "node" "spec.nodeName" -}}
{{- if get $ $key }}
    - name: GLEANER_LABEL_{{ upper $key }}
      valueFrom:
        fieldRef:
          fieldPath: {{ $path }}
{{- $pairs = append $pairs (printf "%s=$(GLEANER_LABEL_%s)" $key (upper $key)) -}}
{{- end -}}
{{- end -}}
{{- range $key, $podLabel := .fromPodLabels }}
    - name: GLEANER_LABEL_{{ upper $key }}
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['{{ $podLabel }}']
{{- $pairs = append $pairs (printf "%s=$(GLEANER_LABEL_%s)" $key (upper $key)) -}}
{{- end -}}
{{- range $key, $value := .static -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- if $pairs }}
    - name: GLEANER_LABELS
      value: {{ join "," $pairs | quote }}
{{- end -}}
{{- with .partitions }}
    - name: GLEANER_PARTITION_LABELS
      value: {{ join "," . | quote }}
{{- end -}}
{{- end -}}
