#!/usr/bin/env python3
"""Deploy drift and schema check for mediabot (run by scripts/deploy-check.sh).

Compares what the deploy files say with what the binary says about itself
(`mediabot deploy-facts`): env names, ports, probe paths, healthcheck, entrypoint. Also
validates every rendered Kubernetes object against the Kubernetes OpenAPI schemas
(kubernetes-validate) and checks the CRD objects it has no schema for (ServiceMonitor,
ScaledObject) structurally. Exits 1 on any failure.

Usage:
  deploy_check.py --facts FACTS.json --deploy-dir DIR --rendered NAME=FILE [--rendered ...]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import yaml

# Kubernetes versions whose schemas every rendered object must satisfy (strict: no unknown
# fields). The oldest is the oldest cluster the manifests support (PDB unhealthyPodEvictionPolicy
# is GA in 1.31).
K8S_VERSIONS = ["1.31.0", "1.37.0"]
# Sections of mediabot.toml (crates/engine/src/config.rs `Config`), used when deploy-facts has no
# `toml_keys` list yet.
TOML_SECTIONS = {"server", "graph", "media", "calls", "recording", "transcription"}
# Metrics the autoscalers may use, when deploy-facts has no `metrics` list yet.
SCALING_METRICS = {"mediabot_calls_active", "mediabot_streams_active"}
# Documented default of server.shutdown_grace_secs, when deploy-facts does not state it.
DEFAULT_GRACE_SECS = 300
# Time after the grace period to finalize files and exit.
FINALIZE_MARGIN_SECS = 30


class Report:
    """Collects check results; prints each as it comes."""

    def __init__(self) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self.notes: list[str] = []

    def check(self, cond: bool, what: str, detail: str = "") -> bool:
        if cond:
            self.ok += 1
            print(f"  ok    {what}")
        else:
            msg = f"{what}: {detail}" if detail else what
            self.failures.append(msg)
            print(f"  FAIL  {msg}")
        return cond

    def note(self, what: str) -> None:
        self.notes.append(what)
        print(f"  note  {what}")


def port_of(listen: str) -> int:
    m = re.search(r":(\d+)$", listen.strip())
    if not m:
        raise ValueError(f"listen address {listen!r} has no :port")
    return int(m.group(1))


def effective(env: dict[str, str], toml: dict, facts: dict) -> dict:
    """Effective ports/grace of one instance: env override > TOML > binary default."""
    server = toml.get("server", {})
    media = toml.get("media", {})
    http = facts["http_port"]
    if "listen" in server:
        http = port_of(server["listen"])
    if "MEDIABOT_SERVER_LISTEN" in env:
        http = port_of(env["MEDIABOT_SERVER_LISTEN"])
    udp = int(env.get("MEDIABOT_MEDIA_UDP_PORT", media.get("udp_port", facts["udp_port"])))
    grace = int(
        env.get(
            "MEDIABOT_SERVER_SHUTDOWN_GRACE_SECS",
            server.get("shutdown_grace_secs", facts.get("shutdown_grace_secs", DEFAULT_GRACE_SECS)),
        )
    )
    tls = bool(server.get("tls_cert") or env.get("MEDIABOT_SERVER_TLS_CERT"))
    max_calls = env.get("MEDIABOT_MEDIA_MAX_CALLS", media.get("max_calls", facts.get("max_calls")))
    return {"http": http, "udp": udp, "grace": grace, "tls": tls,
            "max_calls": int(max_calls) if max_calls is not None else None}


def check_toml(r: Report, where: str, toml: dict, facts: dict) -> None:
    keys = facts.get("toml_keys")
    for section, body in toml.items():
        r.check(section in TOML_SECTIONS, f"{where}: [{section}] is a known section",
                f"unknown section; known: {sorted(TOML_SECTIONS)}")
        if keys is not None and isinstance(body, dict):
            for k in body:
                r.check(f"{section}.{k}" in keys, f"{where}: key {section}.{k} is read by the binary",
                        "not in deploy-facts toml_keys")
    if keys is None:
        r.note(f"{where}: deploy-facts has no toml_keys; only section names checked")


def check_env_names(r: Report, where: str, names: list[str], facts: dict) -> None:
    known = set(facts["env"])
    for n in names:
        if n.startswith("MEDIABOT_"):
            r.check(n in known, f"{where}: env {n} is read by the binary",
                    "not in deploy-facts env (typo, or the binary dropped it)")


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuations joined, comments dropped."""
    out = []
    stage = -1
    buf = ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        instr, _, args = buf.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stage += 1
        out.append((stage, instr, args.strip()))
        buf = ""
    return out


def exec_form(args: str) -> list[str] | None:
    try:
        v = json.loads(args)
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def check_dockerfile(r: Report, path: Path, facts: dict) -> dict:
    print(f"== Dockerfile {path}")
    ins = dockerfile_instructions(path.read_text())
    last = max(s for s, _, _ in ins)
    froms = [a for s, i, a in ins if i == "FROM"]
    r.check(len(froms) >= 2, "multi-stage build", f"FROM lines: {froms}")
    r.check(froms[0].split()[0].startswith("rust:1.95") and "bookworm" in froms[0],
            "build stage is rust:1.95 on bookworm", froms[0])
    r.check(froms[-1].split()[0] == "debian:bookworm-slim", "runtime stage is debian:bookworm-slim",
            froms[-1])
    runs = " ".join(a for s, i, a in ins if i == "RUN" and s == 0)
    r.check("cargo build --release --locked -p mediabot" in runs,
            "build stage runs cargo build --release --locked -p mediabot")
    r.check("cmake" in runs, "build stage installs cmake (bundled libopus)")
    final = [(i, a) for s, i, a in ins if s == last]
    expose = set()
    for i, a in final:
        if i == "EXPOSE":
            expose.update(a.split())
    want = {f"{facts['http_port']}/tcp", f"{facts['udp_port']}/udp"}
    r.check(expose == want, f"EXPOSE {sorted(want)}", f"Dockerfile exposes {sorted(expose)}")
    hc = [a for i, a in final if i == "HEALTHCHECK"]
    hc_cmd = None
    if hc:
        m = re.search(r"\bCMD\s+(.*)$", hc[-1])
        hc_cmd = exec_form(m.group(1)) if m else None
    want_hc = list(facts["healthcheck_command"])
    r.check(hc_cmd is not None and hc_cmd[: len(want_hc)] == want_hc,
            f"HEALTHCHECK runs {want_hc}", f"found {hc_cmd}")
    if hc_cmd and "--url" in hc_cmd:
        url = hc_cmd[hc_cmd.index("--url") + 1]
        r.check(url.endswith(f":{facts['http_port']}{facts['liveness_path']}"),
                "HEALTHCHECK --url targets the HTTP port and liveness path", url)
    users = [a for i, a in final if i == "USER"]
    r.check(bool(users) and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0",
            "runtime runs as a numeric non-root USER", f"USER {users}")
    ep = [exec_form(a) for i, a in final if i == "ENTRYPOINT"]
    cmd = [exec_form(a) for i, a in final if i == "CMD"]
    r.check(bool(ep) and ep[-1] == ["mediabot"], "ENTRYPOINT [\"mediabot\"]", f"found {ep}")
    ok_cmd = bool(cmd) and cmd[-1] is not None and cmd[-1][:2] == ["run", "--config"] and len(cmd[-1]) == 3
    r.check(ok_cmd, "CMD [\"run\", \"--config\", FILE]", f"found {cmd}")
    copies = " ".join(a for i, a in final if i == "COPY")
    r.check("/usr/local/bin/mediabot" in copies, "binary installed at /usr/local/bin/mediabot")
    return {"config_path": cmd[-1][2] if ok_cmd else None}


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate_schemas(r: Report, name: str, docs: list[dict]) -> None:
    import kubernetes_validate  # from the venv made by scripts/deploy-check.sh
    from kubernetes_validate.utils import SchemaNotFoundError

    for d in docs:
        ident = f"{name}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
        structural = False
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(d, v, strict=True)
                r.check(True, f"{ident} valid against Kubernetes {v} schema (strict)")
            except SchemaNotFoundError:
                structural = True
                break
            except kubernetes_validate.ValidationError as e:
                loc = "/".join(str(p) for p in e.absolute_path)
                r.check(False, f"{ident} valid against Kubernetes {v} schema", f"{loc}: {e.message}")
        if structural:
            check_crd_structure(r, ident, d)


def _path(d: dict, *keys):
    cur = d
    for k in keys:
        if isinstance(k, int):
            if not isinstance(cur, list) or len(cur) <= k:
                return None
        elif not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def check_crd_structure(r: Report, ident: str, d: dict) -> None:
    """CRDs without a bundled schema: required fields and types, by hand."""
    kind, api = d.get("kind"), d.get("apiVersion")
    if (kind, api) == ("ServiceMonitor", "monitoring.coreos.com/v1"):
        eps = _path(d, "spec", "endpoints")
        ok = (isinstance(_path(d, "spec", "selector", "matchLabels"), dict)
              and isinstance(eps, list) and len(eps) > 0
              and all(isinstance(e, dict) and isinstance(e.get("port"), str) for e in eps)
              and set(d["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel",
                                     "targetLabels", "podTargetLabels", "sampleLimit"})
        r.check(ok, f"{ident} structurally valid (no schema bundled: checked by hand)",
                "needs spec.selector.matchLabels and spec.endpoints[].port (string), known keys only")
    elif (kind, api) == ("ScaledObject", "keda.sh/v1alpha1"):
        trig = _path(d, "spec", "triggers")
        ok = (_path(d, "spec", "scaleTargetRef", "name") is not None
              and isinstance(trig, list) and len(trig) > 0
              and all(isinstance(t.get("type"), str) and isinstance(t.get("metadata"), dict)
                      and all(isinstance(v, str) for v in t["metadata"].values()) for t in trig)
              and all(isinstance(d["spec"].get(k, 0), int) for k in
                      ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"))
              and set(d["spec"]) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount",
                                     "pollingInterval", "cooldownPeriod", "idleReplicaCount",
                                     "advanced", "triggers", "fallback", "initialCooldownPeriod"})
        r.check(ok, f"{ident} structurally valid (no schema bundled: checked by hand)",
                "needs scaleTargetRef.name, triggers[].type + string metadata, integer counts")
    else:
        r.check(False, f"{ident} has a schema", "no bundled schema and no structural check for it")


def test_wrapper(r: Report, c: dict, config_path: str | None) -> None:
    """Runs the container's shell step with a stand-in `mediabot` on PATH, for each way of
    finding the public IP, and checks what the real binary would be started with."""
    import subprocess
    import tempfile

    script = " ".join(c["args"]).replace("$$", "$")  # Kubernetes' $$ escape
    static = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "bin").mkdir()
        fake = t / "bin" / "mediabot"
        fake.write_text('#!/bin/sh\necho "ARGS=$*"\necho "IP=$MEDIABOT_MEDIA_PUBLIC_IP"\n')
        fake.chmod(0o755)
        ipdir = t / "ips"
        ipdir.mkdir()
        cases = [
            ("pod file", {"mediabot-0": "203.0.113.10", "node-a": "198.51.100.1"}, "false", 0, "203.0.113.10"),
            ("node file", {"node-a": "198.51.100.1"}, "false", 0, "198.51.100.1"),
            ("host IP", {}, "true", 0, "192.0.2.5"),
            ("no IP anywhere", {}, "false", 64, None),
        ]
        for name, files, from_host, want_rc, want_ip in cases:
            for f in ipdir.iterdir():
                f.unlink()
            for k, v in files.items():
                (ipdir / k).write_text(v)
            env = {**static, "PATH": f"{t / 'bin'}:/usr/bin:/bin", "POD_NAME": "mediabot-0",
                   "NODE_NAME": "node-a", "HOST_IP": "192.0.2.5", "PUBLIC_IP_DIR": str(ipdir),
                   "PUBLIC_IP_FROM_HOST_IP": from_host}
            env.pop("MEDIABOT_MEDIA_PUBLIC_IP", None)
            p = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True,
                               timeout=10, cwd=tmp)
            ok = p.returncode == want_rc
            if want_ip:
                ok = ok and f"IP={want_ip}" in p.stdout and f"ARGS=run --config {config_path}" in p.stdout
            else:
                ok = ok and "mediabot-public-ips" in p.stderr
            r.check(ok, f"container shell step, public IP from {name}",
                    f"rc={p.returncode} out={p.stdout.strip()!r} err={p.stderr.strip()!r}")


def selects(selector: dict | None, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_rendered(r: Report, name: str, docs: list[dict], facts: dict, image: dict) -> None:
    print(f"== drift: {name}")
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    stss = [s for s in by_kind.get("StatefulSet", [])
            if any(c["name"] == "mediabot" for c in s["spec"]["template"]["spec"]["containers"])]
    if not r.check(len(stss) == 1, "exactly one mediabot StatefulSet", f"found {len(stss)}"):
        return
    sts = stss[0]
    sts_name = sts["metadata"]["name"]
    pod = sts["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    spec = pod["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "mediabot")
    cms = {m["metadata"]["name"]: m for m in by_kind.get("ConfigMap", [])}

    # --- configuration file: which ConfigMap is mounted where, and does the command use it
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    config_path = image.get("config_path")
    if c.get("command"):
        argv = c["command"] + c.get("args", [])
    else:  # the image's ENTRYPOINT, then args or the image's CMD
        argv = ["mediabot"] + (c.get("args") or ["run", "--config", config_path or ""])
    joined = " ".join(argv)
    m = re.search(r"(?:^|[\s;])(?:exec\s+)?mediabot\s+run\s+--config\s+(\S+)", joined)
    r.check(m is not None, "container runs `mediabot run --config FILE`", f"argv {argv!r}")
    image.setdefault("k8s_commands", []).extend(
        re.findall(r"(?:^|[\s;])(?:exec\s+)?mediabot\s+([a-z][a-z-]*)", joined))
    toml: dict = {}
    if m:
        cfg = m.group(1)
        r.check(cfg == config_path, f"config path {cfg} equals the image's CMD", f"image CMD uses {config_path}")
        mount = next((vm for vm in c.get("volumeMounts", [])
                      if vm["mountPath"] == cfg or cfg.startswith(vm["mountPath"].rstrip("/") + "/")), None)
        if r.check(mount is not None, f"{cfg} is mounted from a volume"):
            vol = vols.get(mount["name"], {})
            cm_name = _path(vol, "configMap", "name")
            key = mount.get("subPath") or cfg[len(mount["mountPath"].rstrip("/")) + 1:]
            cm = cms.get(cm_name)
            if r.check(cm is not None and key in cm.get("data", {}),
                       f"ConfigMap {cm_name} has key {key}", "missing ConfigMap or key"):
                try:
                    toml = tomllib.loads(cm["data"][key])
                    r.check(True, f"ConfigMap {cm_name}/{key} is valid TOML")
                except tomllib.TOMLDecodeError as e:
                    r.check(False, f"ConfigMap {cm_name}/{key} is valid TOML", str(e))
                check_toml(r, f"ConfigMap {cm_name}/{key}", toml, facts)

    # --- env
    env_list = c.get("env", [])
    env = {e["name"]: e.get("value", "<from " + next(iter(e.get("valueFrom", {"?": 0}))) + ">")
           for e in env_list}
    check_env_names(r, "container env", list(env), facts)
    args_text = " ".join(c.get("args", []) + c.get("command", []))
    for n in sorted(set(re.findall(r"\b(MEDIABOT_[A-Z0-9_]+)", args_text))):
        r.check(n in facts["env"], f"command: {n} is read by the binary", "not in deploy-facts env")
    r.check(not c.get("envFrom"), "no envFrom (every env name is visible to this check)")
    eff = effective({k: v for k, v in env.items() if not v.startswith("<from")}, toml, facts)
    print(f"  info  effective http port {eff['http']}, udp port {eff['udp']}, "
          f"shutdown grace {eff['grace']} s, tls in pod {eff['tls']}")
    # $(VAR) in an env value expands only variables defined earlier in the list; an overlay's
    # strategic-merge patch can move an entry to the front and silently break the expansion.
    url = env.get("MEDIABOT_SERVER_PUBLIC_URL", "")
    idx = [e["name"] for e in env_list].index("MEDIABOT_SERVER_PUBLIC_URL") if url else 0
    before = {e["name"]: e for e in env_list[:idx]}
    refs = re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", url)
    r.check(bool(refs) and all(x in before for x in refs),
            "public URL: every $(VAR) it uses is defined before it in env",
            f"{url} uses {refs}; defined before it: {sorted(before)}")
    r.check(_path(before.get("POD_NAME", {}), "valueFrom", "fieldRef", "fieldPath") == "metadata.name",
            "POD_NAME comes from the downward API (metadata.name)")
    expanded = url
    for x in refs:
        if x != "POD_NAME" and "value" in before.get(x, {}):
            expanded = expanded.replace(f"$({x})", before[x]["value"])
    domain_m = re.match(r"^https://\$\(POD_NAME\)\.([A-Za-z0-9.-]+)/?$", expanded)
    domain = domain_m.group(1) if domain_m else None
    r.check(domain is not None, f"per-pod public URL is https://$(POD_NAME).<domain> ({expanded})",
            url)

    if c.get("command", [])[:2] == ["/bin/sh", "-c"]:
        test_wrapper(r, c, config_path)

    # --- ports
    ports = {p.get("name"): p for p in c.get("ports", [])}
    http_p, media_p = ports.get("http"), ports.get("media")
    r.check(http_p is not None and http_p["containerPort"] == eff["http"]
            and http_p.get("protocol", "TCP") == "TCP",
            f"container port http = {eff['http']}/TCP", f"found {http_p}")
    r.check(media_p is not None and media_p["containerPort"] == eff["udp"]
            and media_p.get("protocol") == "UDP",
            f"container port media = {eff['udp']}/UDP", f"found {media_p}")
    if media_p and "hostPort" in media_p:
        r.check(media_p["hostPort"] == eff["udp"], f"hostPort = udp port {eff['udp']}",
                f"hostPort {media_p['hostPort']} (ICE advertises the udp port)")
    if spec.get("hostNetwork"):
        r.note("hostNetwork: container ports are the node's ports")

    def port_num(p) -> int | None:
        if isinstance(p, int):
            return p
        return ports.get(p, {}).get("containerPort")

    # --- probes
    scheme = "HTTPS" if eff["tls"] else "HTTP"
    for probe, want in (("livenessProbe", facts["liveness_path"]),
                        ("startupProbe", facts["liveness_path"]),
                        ("readinessProbe", facts["readiness_path"])):
        g = _path(c, probe, "httpGet")
        if probe == "startupProbe" and probe not in c:
            continue
        r.check(g is not None and g.get("path") == want, f"{probe} path {want}",
                f"found {g and g.get('path')}")
        if g:
            r.check(port_num(g.get("port")) == eff["http"], f"{probe} port = http {eff['http']}",
                    f"found {g.get('port')}")
            r.check(g.get("scheme", "HTTP") == scheme, f"{probe} scheme {scheme}",
                    f"found {g.get('scheme', 'HTTP')}")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") == "true":
        r.check(ann.get("prometheus.io/port") == str(eff["http"]), "prometheus.io/port = http port",
                f"found {ann.get('prometheus.io/port')}")
        r.check(ann.get("prometheus.io/path") == facts["metrics_path"],
                f"prometheus.io/path = {facts['metrics_path']}", f"found {ann.get('prometheus.io/path')}")

    # --- shutdown
    sleep = 0
    pre = _path(c, "lifecycle", "preStop")
    r.check(pre is not None, "preStop hook present")
    if pre:
        cmd = _path(pre, "exec", "command") or []
        if cmd[:1] == ["sleep"] and len(cmd) == 2 and cmd[1].isdigit():
            sleep = int(cmd[1])
        elif _path(pre, "sleep", "seconds") is not None:
            sleep = int(pre["sleep"]["seconds"])
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    need = sleep + eff["grace"] + FINALIZE_MARGIN_SECS
    r.check(tgps >= need, f"terminationGracePeriodSeconds {tgps} >= preStop {sleep} + grace "
            f"{eff['grace']} + {FINALIZE_MARGIN_SECS}", f"need {need}")
    r.check(sts["spec"].get("podManagementPolicy") == "Parallel",
            "podManagementPolicy Parallel (a full pod is not-ready; OrderedReady would block scale-up)")

    # --- services
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    headless = services.get(sts["spec"].get("serviceName"))
    r.check(headless is not None and headless["spec"].get("clusterIP") == "None",
            f"serviceName {sts['spec'].get('serviceName')} is a headless Service")
    per_pod: dict[str, dict[int, dict]] = {"TCP": {}, "UDP": {}}
    for sname, s in services.items():
        sel = s["spec"].get("selector") or {}
        pod_sel = sel.get("statefulset.kubernetes.io/pod-name")
        ordinal = None
        if pod_sel:
            mo = re.fullmatch(re.escape(sts_name) + r"-(\d+)", pod_sel)
            if not r.check(mo is not None, f"Service {sname} selects a pod of {sts_name}", pod_sel):
                continue
            ordinal = int(mo.group(1))
            r.check(s["spec"].get("publishNotReadyAddresses") is True,
                    f"Service {sname} (per pod) publishes not-ready addresses",
                    "a full or draining pod must stay reachable for its calls")
        elif not selects(sel, pod_labels):
            continue
        for p in s["spec"].get("ports", []):
            proto = p.get("protocol", "TCP")
            tp = p.get("targetPort", p["port"])
            tnum = port_num(tp)
            want = eff["udp"] if proto == "UDP" else eff["http"]
            r.check(tnum == want, f"Service {sname} port {p['port']}/{proto} -> container {want}",
                    f"targetPort {tp} resolves to {tnum}")
            if proto == "UDP":
                r.check(p["port"] == eff["udp"] and s["spec"].get("type") in ("LoadBalancer", "ClusterIP"),
                        f"Service {sname} exposes UDP on the advertised port {eff['udp']}",
                        f"port {p['port']} type {s['spec'].get('type')}: ICE candidates carry media.udp_port")
                if s["spec"].get("type") == "LoadBalancer":
                    r.check(s["spec"].get("externalTrafficPolicy") == "Local",
                            f"Service {sname} externalTrafficPolicy Local (no SNAT, no extra hop)")
            if ordinal is not None:
                per_pod[proto][ordinal] = s

    # --- ingress
    hosts: dict[str, set[str]] = {}
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules", []):
            for p in _path(rule, "http", "paths") or []:
                path, ptype = p["path"], p.get("pathType")
                svc = _path(p, "backend", "service", "name")
                r.check((path, ptype) in ((facts["notification_path"], "Exact"),
                                          (facts["whip_prefix"], "Prefix")),
                        f"Ingress {rule.get('host')} {path} ({ptype}) is the webhook or WHIP",
                        f"only {facts['notification_path']} (Exact) and {facts['whip_prefix']} "
                        "(Prefix) may be public")
                r.check(svc in services, f"Ingress backend Service {svc} exists")
                if svc in services:
                    bp = _path(p, "backend", "service", "port") or {}
                    sp = [x for x in services[svc]["spec"]["ports"]
                          if x.get("name") == bp.get("name") or x["port"] == bp.get("number")]
                    r.check(len(sp) == 1, f"Ingress backend {svc} port {bp} exists")
                hosts.setdefault(rule.get("host", ""), set()).add(svc)

    # --- per-pod coverage vs the autoscaler's maximum
    max_rep = None
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        r.check(ref.get("kind") == "StatefulSet" and ref.get("name") == sts_name,
                f"HPA {h['metadata']['name']} targets StatefulSet {sts_name}", str(ref))
        max_rep = h["spec"]["maxReplicas"]
        for mt in h["spec"].get("metrics", []):
            key = mt["type"][0].lower() + mt["type"][1:]
            mname = _path(mt, key, "metric", "name")
            r.check(mname in facts.get("metrics", SCALING_METRICS), f"HPA metric {mname} is exported",
                    f"expected one of {sorted(facts.get('metrics', SCALING_METRICS))}")
            target = _path(mt, key, "target", "averageValue")
            if mname == "mediabot_calls_active" and target is not None and eff["max_calls"]:
                r.check(float(target) < eff["max_calls"],
                        f"HPA target {target} calls/pod < media.max_calls {eff['max_calls']}",
                        "pods would turn not-ready (full) before the HPA adds any")
    for so in by_kind.get("ScaledObject", []):
        ref = so["spec"]["scaleTargetRef"]
        r.check(ref.get("kind") == "StatefulSet" and ref.get("name") == sts_name,
                f"ScaledObject {so['metadata']['name']} targets StatefulSet {sts_name}", str(ref))
        max_rep = so["spec"].get("maxReplicaCount", 100)
        for t in so["spec"]["triggers"]:
            q = t["metadata"].get("query", "")
            used = set(re.findall(r"\b(mediabot_[a-z_]+)", q))
            r.check(bool(used) and used <= set(facts.get("metrics", SCALING_METRICS)),
                    f"ScaledObject query uses exported metrics {sorted(used)}")
            thr = t["metadata"].get("threshold")
            if used == {"mediabot_calls_active"} and thr and eff["max_calls"]:
                r.check(float(thr) < eff["max_calls"],
                        f"ScaledObject threshold {thr} calls/pod < media.max_calls {eff['max_calls']}",
                        "pods would turn not-ready (full) before KEDA adds any")
    if max_rep is None:
        max_rep = sts["spec"].get("replicas", 1)
        r.note(f"no autoscaler; per-pod resources must cover replicas={max_rep}")
    want_ord = set(range(max_rep))
    uses_hostport = bool(media_p and "hostPort" in media_p) or spec.get("hostNetwork")
    if per_pod["TCP"] or by_kind.get("Ingress"):
        r.check(set(per_pod["TCP"]) >= want_ord, f"per-pod HTTP Services for ordinals 0..{max_rep - 1}",
                f"have {sorted(per_pod['TCP'])}")
        for o in sorted(want_ord):
            host = f"{sts_name}-{o}.{domain}"
            svc = per_pod["TCP"].get(o, {}).get("metadata", {}).get("name")
            r.check(svc is not None and svc in hosts.get(host, set()),
                    f"ingress host {host} routes to pod {o}'s Service", f"hosts: {sorted(hosts)}")
    ips = cms.get("mediabot-public-ips", {}).get("data", {}) or {}
    if name == "base" and not per_pod["UDP"] and not uses_hostport:
        r.note("base: no external media path yet (an overlay adds hostPort or per-pod Services)")
    elif per_pod["UDP"] or not uses_hostport:
        r.check(set(per_pod["UDP"]) >= want_ord,
                f"each pod 0..{max_rep - 1} has a per-pod UDP Service (or use hostPort)",
                f"have {sorted(per_pod['UDP'])}")
        for o, s in sorted(per_pod["UDP"].items()):
            pname = f"{sts_name}-{o}"
            lb = s["spec"].get("loadBalancerIP")
            r.check(pname in ips, f"public IP for {pname} in ConfigMap mediabot-public-ips")
            if lb and pname in ips:
                r.check(ips[pname] == lb, f"{pname} advertises its Service's reserved IP {lb}",
                        f"ConfigMap says {ips[pname]}")
    for k, v in ips.items():
        r.check(re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", v) is not None,
                f"public IP {k}={v} is an IP address (media.public_ip takes no hostname)")

    # --- monitoring and disruption
    for sm in by_kind.get("ServiceMonitor", []):
        sel = _path(sm, "spec", "selector", "matchLabels") or {}
        targets = [s for s in services.values() if selects(sel, s["metadata"].get("labels", {}))]
        r.check(len(targets) == 1, f"ServiceMonitor {sm['metadata']['name']} selects one Service",
                f"selects {[t['metadata']['name'] for t in targets]}")
        for ep in sm["spec"]["endpoints"]:
            r.check(ep.get("path", "/metrics") == facts["metrics_path"],
                    f"ServiceMonitor path {facts['metrics_path']}", f"found {ep.get('path')}")
            for t in targets:
                r.check(any(p.get("name") == ep["port"] for p in t["spec"]["ports"]),
                        f"ServiceMonitor port {ep['port']} exists on Service {t['metadata']['name']}")
                r.check(t["spec"].get("publishNotReadyAddresses") is True,
                        f"scraped Service {t['metadata']['name']} keeps not-ready pods (full/draining bots)")
    pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
            if selects(_path(p, "spec", "selector", "matchLabels"), pod_labels)]
    r.check(len(pdbs) == 1, "a PodDisruptionBudget covers the bot pods", f"found {len(pdbs)}")


# ---------------------------------------------------------------------------------------------
# systemd


def check_systemd(r: Report, d: Path, facts: dict, image: dict) -> None:
    print(f"== systemd {d}")
    unit = (d / "mediabot.service").read_text()
    kv: dict[str, list[str]] = {}
    for line in unit.splitlines():
        s = line.strip()
        if s and not s.startswith(("#", ";", "[")) and "=" in s:
            k, _, v = s.partition("=")
            kv.setdefault(k.strip(), []).append(v.strip())
    env_lines = [ln for ln in (d / "mediabot.env.example").read_text().splitlines()
                 if ln.strip() and not ln.strip().startswith("#")]
    env = dict(ln.split("=", 1) for ln in env_lines)
    check_env_names(r, "mediabot.env.example", list(env), facts)
    for k, v in kv.items():
        if k == "Environment":
            for item in v:
                for tok in shlex.split(item):
                    check_env_names(r, "unit Environment=", [tok.split("=", 1)[0]], facts)
    exe = shlex.split(kv.get("ExecStart", [""])[-1])
    ok = len(exe) == 4 and exe[0].endswith("/mediabot") and exe[1:3] == ["run", "--config"]
    r.check(ok, "ExecStart = mediabot run --config FILE", f"found {exe}")
    toml = {}
    if ok and Path(exe[3]).name == "mediabot.toml" and (d / "mediabot.toml").exists():
        toml = tomllib.loads((d / "mediabot.toml").read_text())
        check_toml(r, "systemd/mediabot.toml", toml, facts)
    eff = effective(env, toml, facts)
    r.check(kv.get("KillSignal") == ["SIGTERM"], "KillSignal=SIGTERM")
    r.check(kv.get("Restart") == ["on-failure"], "Restart=on-failure")
    tos = kv.get("TimeoutStopSec", ["0"])[-1]
    tos_s = int(tos.rstrip("s")) if tos.rstrip("s").isdigit() else 0
    r.check(tos_s >= eff["grace"] + FINALIZE_MARGIN_SECS,
            f"TimeoutStopSec {tos_s} >= grace {eff['grace']} + {FINALIZE_MARGIN_SECS}")
    r.check(f"Open TCP {eff['http']} and UDP {eff['udp']}" in unit,
            f"unit's firewall note names TCP {eff['http']} and UDP {eff['udp']}")
    r.check(kv.get("NoNewPrivileges") == ["yes"] and kv.get("ProtectSystem") == ["strict"],
            "hardening: NoNewPrivileges, ProtectSystem=strict")


def check_adapter_rules(r: Report, path: Path, facts: dict) -> None:
    print(f"== prometheus-adapter rules {path}")
    doc = yaml.safe_load(path.read_text())
    rules = _path(doc, "rules", "custom") or []
    r.check(len(rules) > 0, "adapter rules present")
    for rule in rules:
        used = set(re.findall(r"\b(mediabot_[a-z_]+)", rule.get("seriesQuery", "")))
        r.check(bool(used) and used <= set(facts.get("metrics", SCALING_METRICS)),
                f"adapter rule series {sorted(used)} are exported metrics")
        r.check(_path(rule, "name", "as") in used, f"adapter exposes {_path(rule, 'name', 'as')}")


# Subcommands the deploy files use that the engine does not have yet: reported as a note while
# missing, checked like any other once the binary has them. Empty: every subcommand has landed.
PENDING_COMMANDS: set = set()


def check_commands(r: Report, help_dir: Path | None, used: dict[str, str]) -> None:
    """Every subcommand the deploy files invoke exists in `mediabot --help`."""
    print("== binary subcommands")
    if help_dir is None:
        r.note("no --help-dir: subcommands not checked")
        return
    text = (help_dir / "help.txt").read_text()
    m = re.search(r"(?ms)^Commands:\n(.*?)(?:\n\S|\Z)", text)
    have = {ln.split()[0] for ln in (m.group(1).splitlines() if m else []) if ln.strip()}
    for cmd, where in sorted(used.items()):
        if cmd not in have and cmd in PENDING_COMMANDS:
            r.note(f"PENDING: {where} uses subcommand {cmd}, which the binary does not have yet")
            continue
        r.check(cmd in have, f"{where}: subcommand {cmd} exists in the binary",
                f"`mediabot --help` lists {sorted(have)}")
    if "run" in used and "run" in have:
        run_help = (help_dir / "help-run.txt").read_text()
        r.check("--config" in run_help, "`mediabot run` accepts --config")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--facts", required=True, type=Path)
    ap.add_argument("--deploy-dir", required=True, type=Path)
    ap.add_argument("--rendered", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--no-schema", action="store_true", help="skip schema validation (self-test)")
    ap.add_argument("--help-dir", type=Path, help="dir with help.txt / help-run.txt of the binary")
    a = ap.parse_args()
    facts = json.loads(a.facts.read_text())
    for k in ("env", "http_port", "udp_port", "liveness_path", "readiness_path", "metrics_path",
              "notification_path", "whip_prefix", "healthcheck_command"):
        if k not in facts:
            print(f"deploy-facts lacks {k!r}: the binary and this check disagree", file=sys.stderr)
            return 1
    r = Report()
    image = check_dockerfile(r, a.deploy_dir / "Dockerfile", facts)
    for item in a.rendered:
        name, _, file = item.partition("=")
        docs = load_docs(Path(file))
        if not a.no_schema:
            print(f"== schema: {name} ({len(docs)} objects)")
            validate_schemas(r, name, docs)
        check_rendered(r, name, docs, facts, image)
    check_systemd(r, a.deploy_dir / "systemd", facts, image)
    used = {}
    df = dockerfile_instructions((a.deploy_dir / "Dockerfile").read_text())
    for _, i, args in df:
        v = exec_form(re.sub(r"^.*?\bCMD\s+", "", args) if i == "HEALTHCHECK" else args)
        if i in ("CMD", "HEALTHCHECK") and v:
            sub = v[0] if i == "CMD" else (v[1] if len(v) > 1 and v[0] == "mediabot" else None)
            if sub:
                used[sub] = f"Dockerfile {i}"
    for name in image.get("k8s_commands", []):
        used.setdefault(name, "Kubernetes container command")
    unit = (a.deploy_dir / "systemd" / "mediabot.service").read_text()
    for m in re.finditer(r"(?m)^ExecStart=\S*mediabot\s+(\S+)", unit):
        used.setdefault(m.group(1), "systemd ExecStart")
    check_commands(r, a.help_dir, used)
    rules = a.deploy_dir / "k8s" / "components" / "hpa" / "prometheus-adapter-rules.yaml"
    if rules.exists():
        check_adapter_rules(r, rules, facts)
    print(f"== deploy-check: {r.ok} checks passed, {len(r.failures)} failed, {len(r.notes)} notes")
    for f in r.failures:
        print(f"   FAILED: {f}")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
