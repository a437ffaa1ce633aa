// tests/deploy/validate.mjs - offline checks of deploy/k8s.
// Prints one JSON object per line: {"check": ..., "ok": true|false, "detail": ...}.
// Exit status 0 when every check passed. Run by tests/deploy/test_deploy.py.
//
// Every manifest is validated against its schema: the Kubernetes API's
// (npm kubernetes-models) and, for the ServiceMonitor, the Prometheus
// Operator's CRD schema (npm @kubernetes-models/prometheus-operator). No
// kustomize binary is at hand, so the ConfigMap of the kustomization's
// configMapGenerator is built here the way kustomize builds it (name, one key
// per file) and validated like the rest; the components (kind: Component,
// opt-in) and the *.example.yaml files are validated too.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const k8s = path.resolve(here, "../../deploy/k8s");
let failed = 0;
function report(check, ok, detail = "") {
  if (!ok) failed++;
  console.log(JSON.stringify({ check, ok, detail: String(detail) }));
}

// apiVersion "apps/v1" + kind "Deployment" -> kubernetes-models/apps/v1/Deployment;
// the Prometheus Operator's kinds from its CRD models.
async function modelFor(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    const mod = await import(`@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`);
    return mod[kind];
  }
  const group = apiVersion.includes("/") ? apiVersion : `v1`;
  const mod = await import(`kubernetes-models/${group}/${kind}`);
  return mod[kind];
}

function loadDocs(file) {
  const text = fs.readFileSync(file, "utf8");
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(d.errors[0].message);
    return d.toJS();
  }).filter((d) => d);
}

const kustomization = loadDocs(path.join(k8s, "kustomization.yaml"))[0];
// opt-in components: every subdirectory holding a kustomization of kind Component
const components = fs.readdirSync(k8s, { withFileTypes: true })
  .filter((e) => e.isDirectory() && fs.existsSync(path.join(k8s, e.name, "kustomization.yaml")))
  .map((e) => ({ dir: e.name, k: loadDocs(path.join(k8s, e.name, "kustomization.yaml"))[0] }));
for (const c of components) {
  report(`${c.dir}/ is a kustomize Component`, c.k.kind === "Component" && c.k.apiVersion === "kustomize.config.k8s.io/v1alpha1");
}
const examples = fs.readdirSync(k8s).filter((f) => f.endsWith(".example.yaml")).sort();
const files = [...kustomization.resources, ...examples,
  ...components.flatMap((c) => (c.k.resources ?? []).map((r) => `${c.dir}/${r}`))];
for (const f of files) {
  report(`${kustomization.resources.includes(f) ? "kustomization resource" : "manifest file"} ${f} exists`, fs.existsSync(path.join(k8s, f)));
}
const objects = [];
async function validate(name, doc) {
  const schema = doc.apiVersion?.startsWith("monitoring.coreos.com/") ? "Prometheus Operator CRD" : "Kubernetes";
  const check = `${name} validates against the ${schema} schema`;
  try {
    const Model = await modelFor(doc.apiVersion, doc.kind);
    new Model(doc).validate();
    report(check, true);
  } catch (e) {
    report(check, false, e.message);
  }
}
for (const f of files) {
  if (!fs.existsSync(path.join(k8s, f))) continue;
  let docs;
  try {
    docs = loadDocs(path.join(k8s, f));
  } catch (e) {
    report(`${f} parses`, false, e.message);
    continue;
  }
  report(`${f} parses`, docs.length > 0, `${docs.length} documents`);
  for (const doc of docs) {
    await validate(`${f}: ${doc.kind}/${doc.metadata?.name}`, doc);
    objects.push({ file: f, doc });
  }
}

// The configMapGenerator's ConfigMap, as kustomize builds it: data key = the
// file's name (or KEY of KEY=FILE), value = its text.
const gens = kustomization.configMapGenerator ?? [];
const gen = gens.find((g) => g.name === "marketo-gateway");
report("the ConfigMap comes from kustomize's configMapGenerator", !!gen);
const hashOff = gen?.options?.disableNameSuffixHash === true ||
  kustomization.generatorOptions?.disableNameSuffixHash === true;
report("configMapGenerator keeps the content hash (a change rolls the pods)", !!gen && !hashOff);
if (gen) {
  const data = {};
  for (const entry of gen.files ?? []) {
    const [key, file] = entry.includes("=") ? entry.split("=", 2) : [path.basename(entry), entry];
    const p = path.join(k8s, file);
    report(`configMapGenerator file ${file} exists`, fs.existsSync(p));
    if (fs.existsSync(p)) data[key] = fs.readFileSync(p, "utf8");
  }
  const doc = { apiVersion: "v1", kind: "ConfigMap",
    metadata: { name: gen.name, labels: gen.options?.labels ?? {} }, data };
  await validate(`configMapGenerator: ConfigMap/${gen.name}`, doc);
  objects.push({ file: "kustomization.yaml", doc });
}
report("no plain ConfigMap beside the generator",
  objects.filter((o) => o.doc.kind === "ConfigMap").length === 1);

// Cross-checks between the manifests and the gateway.
const find = (kind, name) => objects.find((o) => o.doc.kind === kind && (!name || o.doc.metadata.name === name))?.doc;
const dep = find("Deployment", "marketo-gateway");
const cm = find("ConfigMap", "marketo-gateway");
const ini = cm?.data?.["gateway.ini"] ?? "";
const iniValue = (section, key) => {
  let cur = "";
  for (const raw of ini.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("[")) cur = line.slice(1, -1);
    else if (cur === section && line.startsWith(key)) {
      const m = line.match(/^([A-Za-z_]+)\s*=\s*(.*)$/);
      if (m && m[1] === key) return m[2];
    }
  }
  return undefined;
};
const c = dep.spec.template.spec.containers[0];
const listen = iniValue("gateway", "listen") ?? "";
const listenPort = Number(listen.split(":").pop());
const httpPort = c.ports.find((p) => p.name === "http")?.containerPort;
report("containerPort matches [gateway] listen", httpPort === listenPort, `${httpPort} vs ${listen}`);
report("gateway listens on all interfaces in the pod", listen.startsWith("0.0.0.0:"), listen);
report("readinessProbe is GET /readyz on the http port",
  c.readinessProbe?.httpGet?.path === "/readyz" && c.readinessProbe?.httpGet?.port === "http");
report("livenessProbe is GET /healthz on the http port",
  c.livenessProbe?.httpGet?.path === "/healthz" && c.livenessProbe?.httpGet?.port === "http");
report("startupProbe is GET /healthz", c.startupProbe?.httpGet?.path === "/healthz");
const drainMs = Number(iniValue("gateway", "drain_timeout_ms") ?? 20000);
const preStop = Number(c.lifecycle?.preStop?.exec?.command?.[1] ?? 0);
const grace = dep.spec.template.spec.terminationGracePeriodSeconds;
report("terminationGracePeriodSeconds > preStop + drain timeout", grace > preStop + drainMs / 1000,
  `${grace} vs ${preStop} + ${drainMs / 1000}`);
const psc = dep.spec.template.spec.securityContext;
const csc = c.securityContext;
report("runs as non-root", psc.runAsNonRoot === true && csc.runAsNonRoot === true && psc.runAsUser > 0);
report("read-only root filesystem", csc.readOnlyRootFilesystem === true);
report("drops ALL capabilities", JSON.stringify(csc.capabilities?.drop) === '["ALL"]');
report("no privilege escalation", csc.allowPrivilegeEscalation === false);
report("no service account token", dep.spec.template.spec.automountServiceAccountToken === false);
report("enableServiceLinks false", dep.spec.template.spec.enableServiceLinks === false);
report("no replicas in the Deployment: the HPA owns the count", dep.spec.replicas === undefined,
  dep.spec.replicas);
report("resources requests and limits", !!(c.resources?.requests && c.resources?.limits));
report("topology spread", (dep.spec.template.spec.topologySpreadConstraints ?? []).length > 0);
const svc = find("Service", "marketo-gateway");
report("Service targets the http port", svc.spec.ports[0].targetPort === "http");
const hpa = find("HorizontalPodAutoscaler");
report("HPA is autoscaling/v2 on the Deployment", hpa.apiVersion === "autoscaling/v2" && hpa.spec.scaleTargetRef.name === dep.metadata.name);
report("HPA keeps at least 3 replicas", hpa.spec.minReplicas >= 3, hpa.spec.minReplicas);
const pdb = find("PodDisruptionBudget");
report("PDB is policy/v1", pdb.apiVersion === "policy/v1");
report("PDB leaves room to evict a pod at the HPA's minimum", pdb.spec.minAvailable < hpa.spec.minReplicas,
  `${pdb.spec.minAvailable} vs ${hpa.spec.minReplicas}`);
const secret = find("Secret");
const values = Object.values(secret.stringData ?? {});
report("Secret example holds placeholders only", values.every((v) => v.includes("REPLACE_ME")));
const envKeys = Object.keys(secret.stringData ?? {});
report("Secret carries the cursor secret shared by every replica", envKeys.includes("CURSOR_SECRET"));
report("Deployment takes its env from the Secret", (c.envFrom ?? []).some((e) => e.secretRef?.name === secret.metadata.name));
// every key in the ConfigMap's INI and every Secret env var is a known setting
const example = fs.readFileSync(path.resolve(here, "../../config/gateway.example.ini"), "utf8");
const known = new Set();
let sec = "";
for (const raw of example.split("\n")) {
  const line = raw.trim();
  if (line.startsWith("[")) sec = line.slice(1, -1);
  const m = line.match(/^;?\s*([a-z_]+)\s*=/);
  if (sec && m) known.add(`${sec}.${m[1]}`);
}
sec = "";
for (const raw of ini.split("\n")) {
  const line = raw.trim();
  if (line.startsWith("[")) { sec = line.slice(1, -1); continue; }
  const m = line.match(/^([a-z_]+)\s*=/);
  if (m) report(`ConfigMap key [${sec}] ${m[1]} is a gateway setting`, known.has(`${sec}.${m[1]}`));
}
for (const k of envKeys) {
  const [s, ...rest] = k.toLowerCase().split("_");
  report(`Secret variable ${k} names a gateway setting`, known.has(`${s}.${rest.join("_")}`));
}
const np = objects.filter((o) => o.doc.kind === "NetworkPolicy").map((o) => o.doc);
const gwnp = np.find((n) => n.metadata.name === "marketo-gateway");
const egressPorts = gwnp.spec.egress.flatMap((e) => e.ports.map((p) => p.port));
report("NetworkPolicy: ingress on the http port", gwnp.spec.ingress[0].ports[0].port === httpPort);
report("NetworkPolicy: egress to Redis, DNS and HTTPS", [6379, 53, 443].every((p) => egressPorts.includes(p)));

// The settings file: mounted where the image's default command reads it
// (deploy/Dockerfile CMD --config), over the image's own file.
const dockerfile = fs.readFileSync(path.resolve(here, "../../deploy/Dockerfile"), "utf8");
const cmdLine = [...dockerfile.matchAll(/^CMD (\[.*\])$/gm)].pop();
const cmd = cmdLine ? JSON.parse(cmdLine[1]) : [];
const iniPath = cmd[cmd.indexOf("--config") + 1];
const vol = dep.spec.template.spec.volumes.find((v) => v.configMap);
const mount = c.volumeMounts.find((m) => m.name === vol?.name);
report("Deployment mounts the generated ConfigMap", vol?.configMap?.name === gen?.name && mount?.subPath === "gateway.ini",
  `${vol?.configMap?.name} vs ${gen?.name}`);
report("the ConfigMap is mounted where the image's default command reads its settings",
  !!iniPath && mount?.mountPath === iniPath, `${mount?.mountPath} vs ${iniPath}`);
report("Deployment args (if any) read that file",
  c.args === undefined || (c.args.length === 2 && c.args[0] === "--config" && c.args[1] === iniPath),
  JSON.stringify(c.args));

// Metrics: scrape annotations and the ServiceMonitor point at the port that
// serves /metrics.
// [gateway] metrics_listen set: /metrics on a port of its own (named
// "metrics"), off the http port; unset: on the http port.
const metricsListen = iniValue("gateway", "metrics_listen") ?? "";
const metricsPortName = metricsListen ? "metrics" : "http";
const metricsPort = c.ports.find((p) => p.name === metricsPortName)?.containerPort;
if (metricsListen) {
  report("containerPort \"metrics\" matches [gateway] metrics_listen",
    metricsPort === Number(metricsListen.split(":").pop()) && metricsListen.startsWith("0.0.0.0:"),
    `${metricsPort} vs ${metricsListen}`);
  const rules = gwnp.spec.ingress ?? [];
  const open = rules.filter((r) => !r.from || r.from.length === 0);
  report("NetworkPolicy: the metrics port is open to selected peers only",
    !open.some((r) => (r.ports ?? []).some((p) => p.port === metricsPort || p.port === metricsPortName)) &&
    rules.some((r) => r.from?.length && (r.ports ?? []).some((p) => p.port === metricsPort)),
    JSON.stringify(rules));
  report("Ingress does not route to the metrics port",
    !JSON.stringify(find("Ingress")?.spec ?? {}).includes(`"${metricsPortName}"`));
}
const ann = dep.spec.template.metadata.annotations ?? {};
report("pod template carries prometheus.io scrape annotations for the metrics port",
  ann["prometheus.io/scrape"] === "true" && Number(ann["prometheus.io/port"]) === metricsPort &&
  ann["prometheus.io/path"] === "/metrics", JSON.stringify(ann));
const sm = find("ServiceMonitor", "marketo-gateway");
const smSel = sm?.spec?.selector?.matchLabels ?? {};
report("ServiceMonitor selects the gateway Service (and not Redis's)",
  Object.keys(smSel).length > 0 && Object.entries(smSel).every(([k, v]) => svc.metadata.labels?.[k] === v) &&
  !Object.entries(smSel).every(([k, v]) => find("Service", "marketo-gateway-redis")?.metadata.labels?.[k] === v),
  JSON.stringify(smSel));
const smEp = sm?.spec?.endpoints?.[0];
const smSvcPort = svc.spec.ports.find((p) => p.name === smEp?.port);
report("ServiceMonitor scrapes /metrics on the Service port of the metrics container port",
  smEp?.path === "/metrics" && smSvcPort?.targetPort === metricsPortName,
  `${smEp?.port} -> ${smSvcPort?.targetPort} (want ${metricsPortName})`);

// The example Ingress: to the gateway's http port; body size and timeouts
// that let the gateway's own limits answer.
const ing = find("Ingress", "marketo-gateway");
const backend = ing?.spec?.rules?.[0]?.http?.paths?.[0]?.backend?.service;
report("Ingress routes to the gateway Service's http port", backend?.name === svc.metadata.name && backend?.port?.name === "http",
  JSON.stringify(backend));
const sizeBytes = (v) => {
  const m = String(v ?? "").match(/^(\d+)([kmg]?)$/i);
  return m ? Number(m[1]) * ({ "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 })[m[2].toLowerCase()] : 0;
};
const ingAnn = ing?.metadata?.annotations ?? {};
const maxBody = Number(iniValue("gateway", "max_body_bytes") ?? 8388608);
report("Ingress accepts bodies up to gateway.max_body_bytes",
  sizeBytes(ingAnn["nginx.ingress.kubernetes.io/proxy-body-size"]) >= maxBody,
  `${ingAnn["nginx.ingress.kubernetes.io/proxy-body-size"]} vs ${maxBody}`);
const reqTimeoutS = Number(iniValue("gateway", "request_timeout_ms") ?? 60000) / 1000;
report("Ingress waits longer than gateway.request_timeout_ms",
  Number(ingAnn["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > reqTimeoutS,
  `${ingAnn["nginx.ingress.kubernetes.io/proxy-read-timeout"]} vs ${reqTimeoutS}`);
process.exit(failed ? 1 : 0);
