// Validates the rendered PodMonitors against prometheus-operator's schema, through the npm models
// (@kubernetes-models/prometheus-operator: types, required fields, enums and patterns; its schema,
// like the CRD's, accepts unknown fields, which the golden files pin instead).
//
//   node validate_podmonitor.mjs FILE.json     FILE: [{"case": NAME, "object": PODMONITOR}, ...]
//
// K8S_NPM_DIR names the directory holding node_modules (tests/k8s/run.sh installs it in
// .tools/npm-k8s). The model is imported by its file: its own imports then resolve there.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modelFile = join(
  process.env.K8S_NPM_DIR,
  "node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js",
);
const { PodMonitor } = await import(pathToFileURL(modelFile).href);

function problem(object) {
  try {
    new PodMonitor(object).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

// The control: an invalid PodMonitor must be refused, or this check proves nothing.
const control = problem({
  apiVersion: "monitoring.coreos.com/v1",
  kind: "PodMonitor",
  metadata: { name: "control" },
  spec: { selector: {}, podMetricsEndpoints: [{ port: "metrics", interval: "30 seconds" }] },
});
if (control === null) {
  console.error("the control PodMonitor (interval '30 seconds') was accepted: the models validate nothing");
  process.exit(2);
}

const entries = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const { case: name, object } of entries) {
  const err = problem(object);
  if (err) {
    failed++;
    console.log(`${name}: PodMonitor/${object.metadata.name}: ${err}`);
  }
  const endpoint = object.spec.podMetricsEndpoints[0];
  if (endpoint.path !== "/metrics" || !endpoint.port) {
    failed++;
    console.log(`${name}: the PodMonitor does not scrape /metrics on a named port`);
  }
}
console.log(`${entries.length - failed} of ${entries.length} PodMonitors valid (control refused: ${control})`);
process.exit(failed ? 1 : 0);
