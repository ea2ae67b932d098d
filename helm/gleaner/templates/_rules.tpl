{{/*
Gleaner's alerts and SLO rules for this release's tuning, as JSON: {"alerts": {"groups": …},
"slos": {"groups": …}}. Argument: (dict "skeleton" SKELETON "values" .Values).

The skeleton is deploy/prometheus/rules-skeleton.json (copied to files/ by
tests/k8s/sync_chart_files.sh): both rule files of deploy/generate.py, with every tunable value as
a ${token}, the defaults (deploy/tuning.yaml) and what may be tuned. This template applies the
tuning step for step as generate.py's apply() does, and tests/k8s/chart_test.py (check
"observability") checks that for every rendering both give the same rules:

  1. the tuning: the tuning keys of prometheusRule (ruleLabels, ruleAnnotations, runbookBaseUrl,
     grafanaUrl, selector, alerts, slos) over the defaults, an empty value keeping the default;
     collector from run.interval and run.minAge;
  2. the tokens: ${selector}, ${runbookBaseUrl}, ${grafanaUrl}, every alert's parameters
     (${alert.NAME.PARAM}), every SLO's objective, ratio, budget and, for the latency SLO, its
     target (given, or the smallest bucket at or above run.interval + run.minAge) and bucket
     matcher (le=~"7200(\\.0)?": Prometheus 2 and 3 alike);
  3. every rule: an alert disabled is dropped; for, keep_firing_for and severity replaced where
     set; labels = its own, then ruleLabels, then its own tuning's; annotations likewise; every
     ${token} of its expression, labels and annotations replaced. Groups left empty are dropped.

Never through `tpl`: the rules' {{ $labels.… }} templates are Prometheus's.
*/}}
{{- define "gleaner.rules" -}}
{{- $skel := .skeleton -}}
{{- $v := .values -}}
{{- $p := $v.prometheusRule -}}
{{- /* 1. The tuning over the defaults; an empty value keeps the default (mergeOverwrite would
  write it over the default: empty strings are left out first). */ -}}
{{- $tuning := dict
  "ruleLabels" (deepCopy ($p.ruleLabels | default dict))
  "ruleAnnotations" (deepCopy ($p.ruleAnnotations | default dict))
  "selector" dict
  "collector" (dict "interval" $v.run.interval "minAge" $v.run.minAge)
  "alerts" (deepCopy ($p.alerts | default dict))
  "slos" (deepCopy ($p.slos | default dict)) -}}
{{- range $key := list "runbookBaseUrl" "grafanaUrl" -}}
{{- with index $p $key -}}
{{- $_ := set $tuning $key . -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := ($p.selector | default dict) -}}
{{- if $value -}}
{{- $_ := set $tuning.selector $key $value -}}
{{- end -}}
{{- end -}}
{{- $e := mergeOverwrite (deepCopy $skel.defaults) $tuning -}}
{{- if hasKey $e.ruleLabels "severity" -}}
{{- fail "prometheusRule.ruleLabels: severity is set per alert (prometheusRule.alerts.<name>.severity)" -}}
{{- end -}}
{{- range $name, $a := $e.alerts -}}
{{- if not (hasKey $skel.alerts $name) -}}
{{- fail (printf "prometheusRule.alerts.%s: no such alert (known: %s)" $name (keys $skel.alerts | sortAlpha | join ", ")) -}}
{{- end -}}
{{- if hasKey (($a | default dict).labels | default dict) "severity" -}}
{{- fail (printf "prometheusRule.alerts.%s.labels: severity is set with prometheusRule.alerts.%s.severity" $name $name) -}}
{{- end -}}
{{- $known := (index $skel.alerts $name).params -}}
{{- range $param, $_ := (($a | default dict).params | default dict) -}}
{{- if not (hasKey $known $param) -}}
{{- if $known -}}
{{- fail (printf "prometheusRule.alerts.%s.params.%s: no such parameter (known: %s)" $name $param (keys $known | sortAlpha | join ", ")) -}}
{{- else -}}
{{- fail (printf "prometheusRule.alerts.%s.params.%s: no such parameter (%s has none)" $name $param $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* 2. The tokens. */ -}}
{{- $tok := dict -}}
{{- $selector := printf "job=~\"%s\"" ($e.selector.job | replace "\\" "\\\\" | replace "\"" "\\\"") -}}
{{- with $e.selector.namespace -}}
{{- $selector = printf "%s, namespace=~\"%s\"" $selector (. | replace "\\" "\\\\" | replace "\"" "\\\"") -}}
{{- end -}}
{{- $_ := set $tok "selector" $selector -}}
{{- $_ := set $tok "runbookBaseUrl" $e.runbookBaseUrl -}}
{{- $_ := set $tok "grafanaUrl" ($e.grafanaUrl | trimSuffix "/") -}}
{{- range $name, $a := $skel.alerts -}}
{{- $over := (index $e.alerts $name | default dict).params | default dict -}}
{{- range $param, $default := $a.params -}}
{{- $value := $default -}}
{{- if hasKey $over $param -}}
{{- $value = index $over $param -}}
{{- end -}}
{{- $_ := set $tok (printf "alert.%s.%s" $name $param) (toString $value) -}}
{{- end -}}
{{- end -}}
{{- range $name, $s := $skel.slos -}}
{{- $over := index $e.slos $name | default dict -}}
{{- $objective := $s.objective -}}
{{- if ne (toString ($over.objective | default "")) "" -}}
{{- $objective = $over.objective -}}
{{- end -}}
{{- $ratio := divf $objective 100 -}}
{{- $budget := subf 1 $ratio -}}
{{- if $s.minEvents -}}
{{- if lt (mulf $s.minEvents $skel.pageFactor $budget) 1.0 -}}
{{- fail (printf "prometheusRule.slos.%s.objective %v: its traffic guard (%v events) would let a single bad event page (%v x %v x %v < 1)" $name $objective $s.minEvents $s.minEvents $skel.pageFactor $budget) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $tok (printf "slo.%s.objective" $name) (toString $objective) -}}
{{- $_ := set $tok (printf "slo.%s.ratio" $name) (toString $ratio) -}}
{{- $_ := set $tok (printf "slo.%s.budget" $name) (toString $budget) -}}
{{- $_ := set $tok (printf "slo.%s.budgetPercent" $name) (toString (subf 100 $objective)) -}}
{{- if and (not $s.latency) (ne (toString ($over.target | default "")) "") -}}
{{- fail (printf "prometheusRule.slos.%s.target: only the latency SLO (file-freshness) has a target" $name) -}}
{{- end -}}
{{- if $s.latency -}}
{{- $target := 0 -}}
{{- if ne (toString ($over.target | default "")) "" -}}
{{- $target = int64 $over.target -}}
{{- $found := false -}}
{{- range $skel.buckets -}}
{{- if eq (float64 .) (float64 $over.target) -}}
{{- $found = true -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "prometheusRule.slos.%s.target: %v is not a bucket of gleaner_commit_delay_seconds (%s)" $name $over.target (join ", " $skel.buckets)) -}}
{{- end -}}
{{- else -}}
{{- $need := add (include "gleaner.seconds" (list "run.interval" $e.collector.interval)) (include "gleaner.seconds" (list "run.minAge" $e.collector.minAge)) -}}
{{- range $skel.buckets -}}
{{- if and (eq $target 0) (ge (float64 .) (float64 $need)) -}}
{{- $target = int64 . -}}
{{- end -}}
{{- end -}}
{{- if eq $target 0 -}}
{{- fail (printf "run.interval + run.minAge is %d s, beyond the largest bucket of gleaner_commit_delay_seconds: set prometheusRule.slos.%s.target" (int64 $need) $name) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $tok (printf "slo.%s.target" $name) (toString $target) -}}
{{- $text := printf "%d s" $target -}}
{{- if eq (mod $target 3600) 0 -}}
{{- $text = printf "%d h" (div $target 3600) -}}
{{- else if eq (mod $target 60) 0 -}}
{{- $text = printf "%d min" (div $target 60) -}}
{{- end -}}
{{- $_ := set $tok (printf "slo.%s.targetText" $name) $text -}}
{{- $_ := set $tok (printf "slo.%s.le" $name) (printf "le=~\"%d(\\\\.0)?\"" $target) -}}
{{- end -}}
{{- end -}}
{{- /* 3. The rules. */ -}}
{{- $out := dict -}}
{{- range $file, $doc := $skel.files -}}
{{- $groups := list -}}
{{- range $group := $doc.groups -}}
{{- $rules := list -}}
{{- range $source := $group.rules -}}
{{- $r := deepCopy $source -}}
{{- $keep := true -}}
{{- if hasKey $r "alert" -}}
{{- $t := index $e.alerts $r.alert | default dict -}}
{{- if and (hasKey $t "enabled") (eq (toString $t.enabled) "false") -}}
{{- $keep = false -}}
{{- end -}}
{{- with $t.for -}}
{{- $_ := set $r "for" . -}}
{{- end -}}
{{- with $t.keepFiringFor -}}
{{- $_ := set $r "keep_firing_for" . -}}
{{- end -}}
{{- $labels := mergeOverwrite (dict) ($r.labels | default dict) (deepCopy $e.ruleLabels) (deepCopy ($t.labels | default dict)) -}}
{{- with $t.severity -}}
{{- $_ := set $labels "severity" . -}}
{{- end -}}
{{- $_ := set $r "labels" $labels -}}
{{- $_ := set $r "annotations" (mergeOverwrite (dict) ($r.annotations | default dict) (deepCopy $e.ruleAnnotations) (deepCopy ($t.annotations | default dict))) -}}
{{- end -}}
{{- if $keep -}}
{{- $expr := $r.expr -}}
{{- range $k, $value := $tok -}}
{{- $expr = replace (printf "${%s}" $k) $value $expr -}}
{{- end -}}
{{- $_ := set $r "expr" $expr -}}
{{- range $field := list "labels" "annotations" -}}
{{- $m := dict -}}
{{- range $key, $text := (index $r $field | default dict) -}}
{{- if contains "${" $text -}}
{{- range $k, $value := $tok -}}
{{- $text = replace (printf "${%s}" $k) $value $text -}}
{{- end -}}
{{- end -}}
{{- $_ := set $m $key $text -}}
{{- end -}}
{{- if hasKey $r $field -}}
{{- $_ := set $r $field $m -}}
{{- end -}}
{{- end -}}
{{- $rules = append $rules $r -}}
{{- end -}}
{{- end -}}
{{- if $rules -}}
{{- $g := omit $group "rules" -}}
{{- $_ := set $g "rules" $rules -}}
{{- $groups = append $groups $g -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out $file (dict "groups" $groups) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
