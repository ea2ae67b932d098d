// Validates the rendered prometheus-operator objects (PodMonitors, PrometheusRules and
// AlertmanagerConfigs) against
// prometheus-operator's schema, through the npm models (@kubernetes-models/prometheus-operator:
// types, required fields, enums and patterns such as durations; its schema, like the CRDs',
// accepts unknown fields, which the golden files and tests/k8s/chart_test.py pin instead).
//
//   node validate_podmonitor.mjs FILE.json     FILE: [{"case": NAME, "object": OBJECT}, ...]
//
// K8S_NPM_DIR names the directory holding node_modules (tests/k8s/run.sh installs it in
// .tools/npm-k8s). The models are imported by their files: their own imports then resolve there.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

async function model(kind, version = "v1") {
  const file = join(
    process.env.K8S_NPM_DIR,
    `node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/${version}/${kind}.js`,
  );
  return (await import(pathToFileURL(file).href))[kind];
}
const models = {
  PodMonitor: await model("PodMonitor"),
  PrometheusRule: await model("PrometheusRule"),
  AlertmanagerConfig: await model("AlertmanagerConfig", "v1alpha1"),
};

function problem(object) {
  const Model = models[object.kind];
  if (!Model) return `no model for kind ${object.kind}`;
  try {
    new Model(object).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

// The controls: an invalid object of each kind must be refused, or this check proves nothing.
const controls = {
  PodMonitor: problem({
    apiVersion: "monitoring.coreos.com/v1",
    kind: "PodMonitor",
    metadata: { name: "control" },
    spec: { selector: {}, podMetricsEndpoints: [{ port: "metrics", interval: "30 seconds" }] },
  }),
  PrometheusRule: problem({
    apiVersion: "monitoring.coreos.com/v1",
    kind: "PrometheusRule",
    metadata: { name: "control" },
    spec: { groups: [{ name: "control", rules: [{ alert: "Control", expr: "up == 0", for: "5 minutes" }] }] },
  }),
  // A webhook URL written in (not a Secret's key) and a matcher operator Alertmanager lacks.
  AlertmanagerConfig: problem({
    apiVersion: "monitoring.coreos.com/v1alpha1",
    kind: "AlertmanagerConfig",
    metadata: { name: "control" },
    spec: {
      route: { receiver: "slack", matchers: [{ name: "alertname", value: "Gleaner.+", matchType: "~=" }] },
      receivers: [{ name: "slack", slackConfigs: [{ apiURL: "https://hooks.slack.com/services/T0/B0/X" }] }],
    },
  }),
};
for (const [kind, refused] of Object.entries(controls)) {
  if (refused === null) {
    console.error(`the control ${kind} was accepted: the models validate nothing`);
    process.exit(2);
  }
}

// Beyond the schema: what Prometheus itself requires of a rule, and what the chart promises.
function semantics(object) {
  const out = [];
  if (object.kind === "AlertmanagerConfig") {
    const names = new Set((object.spec.receivers ?? []).map((r) => r.name));
    const walk = (route) => {
      if (!names.has(route.receiver)) out.push(`route to ${route.receiver}, a receiver that does not exist`);
      (route.routes ?? []).forEach(walk);
    };
    walk(object.spec.route);
    for (const r of object.spec.receivers ?? []) {
      for (const c of r.slackConfigs ?? []) if (!c.apiURL?.name || !c.apiURL?.key) out.push(`${r.name}: no Secret for the webhook URL`);
    }
  } else if (object.kind === "PodMonitor") {
    const endpoint = object.spec.podMetricsEndpoints[0];
    if (endpoint.path !== "/metrics" || !endpoint.port) out.push("does not scrape /metrics on a named port");
  } else {
    const groups = object.spec.groups ?? [];
    if (!groups.length) out.push("has no rule group");
    const names = new Set();
    for (const group of groups) {
      if (names.has(group.name)) out.push(`has the group ${group.name} twice`);
      names.add(group.name);
      if (!group.rules?.length) out.push(`group ${group.name} has no rule`);
      for (const rule of group.rules ?? []) {
        if (!!rule.alert === !!rule.record) out.push(`group ${group.name}: a rule is not exactly one of alert or record`);
        if (typeof rule.expr !== "string" || !rule.expr.trim()) out.push(`group ${group.name}: ${rule.alert ?? rule.record} has no expr`);
        if (rule.alert && !rule.labels?.severity) out.push(`${rule.alert} has no severity`);
      }
    }
  }
  return out;
}

const entries = JSON.parse(readFileSync(process.argv[2], "utf8"));
const counts = {};
let failed = 0;
for (const { case: name, object } of entries) {
  const where = `${name}: ${object.kind}/${object.metadata.name}`;
  const errors = [problem(object), ...semantics(object)].filter(Boolean);
  for (const err of errors) console.log(`${where}: ${err}`);
  if (errors.length) failed++;
  const c = (counts[object.kind] ??= { valid: 0, all: 0 });
  c.all++;
  if (!errors.length) c.valid++;
}
for (const [kind, c] of Object.entries(counts)) {
  console.log(`${c.valid} of ${c.all} ${kind}s valid (control refused: ${controls[kind]})`);
}
process.exit(failed ? 1 : 0);
