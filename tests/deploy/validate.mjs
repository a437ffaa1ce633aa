// tests/deploy/validate.mjs - offline checks of deploy/k8s.
// Prints one JSON object per line: {"check": ..., "ok": true|false, "detail": ...}.
// Exit status 0 when every check passed. Run by tests/deploy/test_deploy.py.
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

// apiVersion "apps/v1" + kind "Deployment" -> kubernetes-models/apps/v1/Deployment
async function modelFor(apiVersion, kind) {
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
const files = [...kustomization.resources, "secret.example.yaml"];
const objects = [];
for (const f of kustomization.resources) {
  report(`kustomization resource ${f} exists`, fs.existsSync(path.join(k8s, f)));
}
for (const f of files) {
  let docs;
  try {
    docs = loadDocs(path.join(k8s, f));
  } catch (e) {
    report(`${f} parses`, false, e.message);
    continue;
  }
  report(`${f} parses`, docs.length > 0, `${docs.length} documents`);
  for (const doc of docs) {
    const name = `${f}: ${doc.kind}/${doc.metadata?.name}`;
    try {
      const Model = await modelFor(doc.apiVersion, doc.kind);
      new Model(doc).validate();
      report(`${name} validates against the Kubernetes schema`, true);
    } catch (e) {
      report(`${name} validates against the Kubernetes schema`, false, e.message);
    }
    objects.push({ file: f, doc });
  }
}

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
report("3 replicas", dep.spec.replicas === 3);
report("resources requests and limits", !!(c.resources?.requests && c.resources?.limits));
report("topology spread", (dep.spec.template.spec.topologySpreadConstraints ?? []).length > 0);
const svc = find("Service", "marketo-gateway");
report("Service targets the http port", svc.spec.ports[0].targetPort === "http");
const hpa = find("HorizontalPodAutoscaler");
report("HPA is autoscaling/v2 on the Deployment", hpa.apiVersion === "autoscaling/v2" && hpa.spec.scaleTargetRef.name === dep.metadata.name);
const pdb = find("PodDisruptionBudget");
report("PDB is policy/v1", pdb.apiVersion === "policy/v1");
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
process.exit(failed ? 1 : 0);
