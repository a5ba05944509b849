#!/usr/bin/env python3
"""Checks deploy/ without a cluster or a Docker engine (run through scripts/check-deploy.sh).

1. Every YAML and JSON file under deploy/ parses.
2. Kubernetes: every manifest validates (strict: unknown fields are errors) against the
   Kubernetes JSON schemas of the oldest and newest supported minor versions, including the
   ConfigMap that kustomization.yaml generates; the objects refer to each other correctly
   (selectors, names, ports, probes) and the drain timing adds up.
3. Compose: deploy/compose.yaml validates against the Compose Specification schema; its build
   context, Dockerfile and bind-mounted files exist; the Grafana dashboard path is provisioned.
4. Settings: every WS__SECTION__KEY name anywhere in deploy/ is a key of settings.toml, and the
   Kubernetes settings file only uses keys of settings.toml, with values of the right type.
5. Dockerfile: the facts other files rely on (binary, config path, non-root user, STOPSIGNAL,
   healthcheck, port).
6. When the server binary is built (SERVER_BIN, default target/debug/websocket-service): the real
   server starts with the Kubernetes settings file plus the environment each deploy file gives
   it (Dockerfile ENV, Deployment env + Secret example, compose environment), answers /healthz,
   and exits 0 on SIGTERM. The server refuses unknown keys, so this is the final word on names.

Exit status 0 when everything passes; each failure is printed as one line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

try:
    import kubernetes_validate.utils as kv
except ImportError:  # pragma: no cover - the wrapper script installs it
    kv = None

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Oldest and newest Kubernetes minor versions the manifests must be valid for. 1.30: the oldest
# minor still in mainstream support at the big clouds when this was written.
K8S_VERSIONS = ("1.30", "1.37")
# Names in comments that stand for "any key", not a real one.
PLACEHOLDER_ENV = {"WS__SECTION__KEY"}

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"FAIL {message}")


def ok(message: str) -> None:
    print(f"ok   {message}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ------------------------------------------------------------------------------------------
# 1. Parsing
# ------------------------------------------------------------------------------------------


def load_yaml_docs(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def check_parse() -> dict[Path, list]:
    docs: dict[Path, list] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix in (".yaml", ".yml"):
            try:
                docs[path] = load_yaml_docs(path)
                ok(f"{rel(path)} parses as YAML ({len(docs[path])} document(s))")
            except yaml.YAMLError as e:
                fail(f"{rel(path)} is not valid YAML: {e}")
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
                ok(f"{rel(path)} parses as JSON")
            except json.JSONDecodeError as e:
                fail(f"{rel(path)} is not valid JSON: {e}")
        elif path.suffix == ".toml":
            try:
                tomllib.loads(path.read_text(encoding="utf-8"))
                ok(f"{rel(path)} parses as TOML")
            except tomllib.TOMLDecodeError as e:
                fail(f"{rel(path)} is not valid TOML: {e}")
    return docs


# ------------------------------------------------------------------------------------------
# 2. Kubernetes
# ------------------------------------------------------------------------------------------


def kustomize_render(docs: dict[Path, list]) -> list[tuple[str, dict]]:
    """The objects `kustomize build deploy/k8s` would produce (before name hashing)."""
    kustomization = K8S / "kustomization.yaml"
    if kustomization not in docs:
        fail("deploy/k8s/kustomization.yaml is missing")
        return []
    k = docs[kustomization][0]
    objects: list[tuple[str, dict]] = []
    for resource in k.get("resources", []):
        path = K8S / resource
        if path not in docs:
            fail(f"kustomization.yaml lists {resource}, which does not exist or did not parse")
            continue
        objects += [(rel(path), doc) for doc in docs[path]]
    for generator in k.get("configMapGenerator", []):
        data = {}
        for entry in generator.get("files", []):
            key, _, file = entry.rpartition("=") if "=" in entry else (None, None, entry)
            path = K8S / file
            if not path.is_file():
                fail(f"configMapGenerator {generator['name']}: file {file} does not exist")
                continue
            data[key or Path(file).name] = path.read_text(encoding="utf-8")
        objects.append(
            (
                f"configMapGenerator {generator['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": generator["name"]},
                    "data": data,
                },
            )
        )
    ok(f"kustomization.yaml renders {len(objects)} objects: "
       + ", ".join(sorted(f"{o['kind']}/{o['metadata']['name']}" for _, o in objects)))
    return objects


def validate_schemas(objects: list[tuple[str, dict]]) -> None:
    if kv is None:
        fail("kubernetes-validate is not installed (run scripts/check-deploy.sh)")
        return
    for origin, obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        for version in K8S_VERSIONS:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(f"{origin}: {name} invalid for Kubernetes {version}: {path}: {e.message}")
                break
            except kv.SchemaNotFoundError as e:
                fail(f"{origin}: {e.message}")
                break
        else:
            ok(f"{origin}: {name} valid (strict) for Kubernetes {', '.join(K8S_VERSIONS)}")


def kubectl_render_check(objects: list[tuple[str, dict]]) -> None:
    """If kubectl is installed, its kustomize must render the same kinds and names."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("skip kubectl kustomize (kubectl not installed)")
        return
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        fail(f"kubectl kustomize deploy/k8s failed: {result.stderr.strip()}")
        return
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    want = sorted((o["kind"], o["metadata"]["name"]) for _, o in objects)
    # The generator appends a content hash to the ConfigMap name.
    got = sorted(
        (d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])
         if d["kind"] == "ConfigMap" else d["metadata"]["name"])
        for d in rendered
    )
    if want != got:
        fail(f"kubectl kustomize renders {got}, expected {want}")
    else:
        validate_schemas([("kubectl kustomize", d) for d in rendered])
        deployment = next(d for d in rendered if d["kind"] == "Deployment")
        cm = next(d for d in rendered if d["kind"] == "ConfigMap")
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        if not any(v.get("configMap", {}).get("name") == cm["metadata"]["name"] for v in volumes):
            fail("kubectl kustomize: the Deployment does not mount the hashed ConfigMap name")
        else:
            ok(f"kubectl kustomize: Deployment mounts {cm['metadata']['name']}")


def preStop_seconds(container: dict) -> int:
    pre = container.get("lifecycle", {}).get("preStop")
    if not pre:
        return 0
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    command = pre.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0].endswith("sleep"):
        return int(command[1])
    fail(f"preStop hook {pre} is not a plain sleep: cannot check the grace period")
    return 0


def check_k8s_semantics(objects: list[tuple[str, dict]], docs: dict[Path, list],
                        settings_defaults: dict) -> None:
    by_kind: dict[str, list[dict]] = {}
    for _, obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler"):
        if len(by_kind.get(kind, [])) != 1:
            fail(f"kustomization renders {len(by_kind.get(kind, []))} {kind} objects, expected 1")
            return
    deployment = by_kind["Deployment"][0]
    service = by_kind["Service"][0]
    configmap = by_kind["ConfigMap"][0]
    pdb = by_kind["PodDisruptionBudget"][0]
    hpa = by_kind["HorizontalPodAutoscaler"][0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    containers = spec["containers"]
    container = containers[0]

    def selects(selector: dict, what: str) -> None:
        if all(pod_labels.get(k) == v for k, v in selector.items()):
            ok(f"{what} selects the Deployment's pods")
        else:
            fail(f"{what} selector {selector} does not match pod labels {pod_labels}")

    selects(deployment["spec"]["selector"]["matchLabels"], "Deployment")
    selects(service["spec"]["selector"], "Service")
    selects(pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")
    target = hpa["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]):
        ok("HorizontalPodAutoscaler targets the Deployment")
    else:
        fail(f"HPA scaleTargetRef {target} is not the Deployment")
    if "replicas" in deployment["spec"]:
        fail("Deployment sets replicas: every apply would reset the HPA's choice")
    if hpa["spec"].get("minReplicas", 1) < 2:
        fail("HPA minReplicas < 2: a drain would leave no pod to reconnect to")

    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for p in service["spec"]["ports"]:
        t = p["targetPort"]
        if (isinstance(t, str) and t not in ports) or (isinstance(t, int) and t not in ports.values()):
            fail(f"Service targetPort {t} is not a container port ({ports})")
        else:
            ok(f"Service port {p['port']} -> container port {t}")

    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    bind = env.get("WS__SERVER__BIND")
    settings = tomllib.loads((K8S / "settings.toml").read_text(encoding="utf-8"))
    bind = bind or settings.get("server", {}).get("bind", settings_defaults["server"]["bind"])
    bind_port = int(bind.rsplit(":", 1)[1])
    if bind_port not in ports.values():
        fail(f"server binds port {bind_port} but the container declares {ports}")
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") not in (None, str(bind_port)):
        fail(f"prometheus.io/port {annotations['prometheus.io/port']} != server port {bind_port}")

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            fail(f"{probe} path is {got!r}, expected {path}")
        else:
            ok(f"{probe} on {path}")

    # The settings file reaches the container: generator -> volume -> mount -> --config.
    volume = next((v for v in spec.get("volumes", [])
                   if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]), None)
    mount = volume and next((m for m in container.get("volumeMounts", [])
                             if m["name"] == volume["name"]), None)
    args = container.get("args", [])
    config = args[args.index("--config") + 1] if "--config" in args else None
    if not mount or config is None:
        fail("the generated ConfigMap is not mounted, or the container has no --config")
    else:
        key = config.removeprefix(mount["mountPath"].rstrip("/") + "/")
        if key not in configmap["data"]:
            fail(f"--config {config} is not a key of the mounted ConfigMap {list(configmap['data'])}")
        else:
            ok(f"--config {config} comes from the generated ConfigMap")

    # The Secret the pods import is the one the example documents.
    secret_example = docs.get(K8S / "secret.example.yaml", [])
    secret_names = {d["metadata"]["name"] for d in secret_example if d.get("kind") == "Secret"}
    for source in container.get("envFrom", []):
        name = source.get("secretRef", {}).get("name")
        if name and name not in secret_names:
            fail(f"envFrom secretRef {name} has no example in deploy/k8s/secret.example.yaml")
        elif name:
            ok(f"envFrom secret {name} is documented by secret.example.yaml")
    if secret_example:
        validate_schemas([("deploy/k8s/secret.example.yaml", d) for d in secret_example])

    # Drain timing: grace period > preStop pause + drain_timeout_s.
    drain = settings.get("shutdown", {}).get(
        "drain_timeout_s", settings_defaults["shutdown"]["drain_timeout_s"])
    if "WS__SHUTDOWN__DRAIN_TIMEOUT_S" in env:
        drain = int(env["WS__SHUTDOWN__DRAIN_TIMEOUT_S"])
    pause = preStop_seconds(container)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if pause <= 0:
        fail("no preStop pause: the drain would start before endpoints are removed")
    if grace <= pause + drain:
        fail(f"terminationGracePeriodSeconds {grace} <= preStop {pause} s + drain_timeout_s {drain}")
    else:
        ok(f"terminationGracePeriodSeconds {grace} > preStop {pause} s + drain_timeout_s {drain}")
    resources = container.get("resources", {})
    if not resources.get("requests", {}).get("cpu") or not resources.get("requests", {}).get("memory"):
        fail("container has no cpu and memory requests (the HPA needs the cpu request)")
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        fail("pod securityContext.runAsNonRoot is not true")


# ------------------------------------------------------------------------------------------
# 3. Compose
# ------------------------------------------------------------------------------------------


def parse_duration_s(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|us|h|m|s)", str(value)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def check_compose(docs: dict[Path, list]) -> None:
    path = DEPLOY / "compose.yaml"
    if path not in docs:
        fail("deploy/compose.yaml is missing or did not parse")
        return
    check_jsonschema = shutil.which("check-jsonschema", path=os.path.dirname(sys.executable)) \
        or shutil.which("check-jsonschema")
    if not check_jsonschema:
        fail("check-jsonschema is not installed (run scripts/check-deploy.sh)")
    else:
        result = subprocess.run(
            [check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            fail(f"deploy/compose.yaml does not match the Compose Specification:\n"
                 f"{result.stdout}{result.stderr}")
        else:
            ok("deploy/compose.yaml matches the Compose Specification schema")

    compose = docs[path][0]
    services = compose.get("services", {})
    for wanted in ("websocket-service", "redis", "jaeger", "prometheus", "grafana"):
        if wanted not in services:
            fail(f"compose.yaml has no {wanted} service")
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                fail(f"compose {name}: Dockerfile {dockerfile} does not exist")
            elif not (context / "Cargo.toml").is_file():
                fail(f"compose {name}: build context {context} is not the workspace root")
            else:
                ok(f"compose {name}: builds {rel(dockerfile)} from {rel(context) or '.'}")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and source.startswith("."):
                if not (DEPLOY / source).exists():
                    fail(f"compose {name}: bind mount source {source} does not exist")
                else:
                    ok(f"compose {name}: mounts {source}")
        for dep in service.get("depends_on", []):
            if dep not in services:
                fail(f"compose {name}: depends on unknown service {dep}")

    server = services.get("websocket-service", {})
    env = server.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    drain = float(env.get("WS__SHUTDOWN__DRAIN_TIMEOUT_S", 30))
    grace = parse_duration_s(server.get("stop_grace_period", "10s"))
    if grace <= drain:
        fail(f"compose stop_grace_period {grace} s <= WS__SHUTDOWN__DRAIN_TIMEOUT_S {drain}")
    else:
        ok(f"compose stop_grace_period {grace:g} s > drain_timeout_s {drain:g}")

    # Prometheus scrapes the server's port; Grafana gets the dashboard the other engineer owns.
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom.get("scrape_configs", [])
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
    if "websocket-service:8080" not in targets:
        fail(f"prometheus.yml does not scrape websocket-service:8080 (targets {targets})")
    else:
        ok("prometheus.yml scrapes websocket-service:8080/metrics")
    check_prometheus_rules(prom, services.get("prometheus", {}))
    check_grafana(services.get("grafana", {}))


def check_prometheus_rules(prom: dict, service: dict) -> None:
    """Every rule file Prometheus loads is mounted from deploy/ and holds well-formed rules."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = DEPLOY / source
    for rule_file in prom.get("rule_files", []):
        source = mounts.get(rule_file)
        if source is None or not source.is_file():
            fail(f"prometheus.yml loads {rule_file}, which compose.yaml does not mount from deploy/")
            continue
        rules = [r for g in (yaml.safe_load(source.read_text()) or {}).get("groups", [])
                 for r in g.get("rules", [])]
        bad = [r for r in rules if not r.get("expr") or not (r.get("alert") or r.get("record"))]
        if not rules or bad:
            fail(f"{rel(source)}: rules need alert/record and expr ({len(bad)} bad of {len(rules)})")
        else:
            ok(f"prometheus loads {rel(source)} ({len(rules)} rules)")


def check_grafana(grafana: dict) -> None:
    mounts = {}
    for volume in grafana.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = (DEPLOY / source).resolve()

    def host_path(container_path: str) -> Path | None:
        for target, source in mounts.items():
            if container_path == target or container_path.startswith(target + "/"):
                return source / container_path[len(target):].lstrip("/")
        return None

    provisioning = host_path("/etc/grafana/provisioning")
    if not provisioning or not provisioning.is_dir():
        fail("grafana: /etc/grafana/provisioning is not mounted from deploy/grafana/provisioning")
        return
    datasource_uids = set()
    for f in sorted((provisioning / "datasources").glob("*.y*ml")):
        for ds in yaml.safe_load(f.read_text()).get("datasources", []):
            datasource_uids.add(ds.get("uid"))
    dashboard_files = []
    for f in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(f.read_text()).get("providers", []):
            folder = host_path(provider["options"]["path"])
            if not folder or not folder.is_dir():
                fail(f"grafana provider {provider['name']}: {provider['options']['path']} "
                     "is not mounted from the repository")
                continue
            dashboard_files += sorted(folder.glob("*.json"))
    wanted = DEPLOY / "grafana" / "dashboards" / "websocket-service.json"
    if wanted.resolve() not in [d.resolve() for d in dashboard_files]:
        fail("grafana: deploy/grafana/dashboards/websocket-service.json is not provisioned")
    for dashboard in dashboard_files:
        data = json.loads(dashboard.read_text())
        if not data.get("title") or not isinstance(data.get("panels"), list):
            fail(f"{rel(dashboard)}: not a dashboard (needs title and panels)")
            continue
        used = set()

        def walk(node):
            if isinstance(node, dict):
                ds = node.get("datasource")
                if isinstance(ds, dict) and isinstance(ds.get("uid"), str):
                    used.add(ds["uid"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(data)
        # "${...}" is a dashboard variable, "-- Grafana --"/"grafana" built-in sources.
        unknown = {u for u in used if not u.startswith("$")
                   and u not in ("-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --")
                   } - datasource_uids
        if unknown:
            fail(f"{rel(dashboard)} uses datasource uid(s) {sorted(unknown)}; "
                 f"provisioned: {sorted(datasource_uids)}")
        else:
            ok(f"grafana provisions {rel(dashboard)} ({len(data['panels'])} panels)")


# ------------------------------------------------------------------------------------------
# 4. Settings names
# ------------------------------------------------------------------------------------------

ENV_NAME = re.compile(r"\bWS__[A-Z0-9_]+\b")


def check_env_names(defaults: dict) -> None:
    count = 0
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file() or path.suffix in (".json", ".pyc"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for name in ENV_NAME.findall(line):
                if name in PLACEHOLDER_ENV:
                    continue
                count += 1
                parts = name.split("__")
                if len(parts) != 3 or not parts[1] or not parts[2]:
                    fail(f"{rel(path)}:{lineno}: {name} is not WS__SECTION__KEY")
                    continue
                section, key = parts[1].lower(), parts[2].lower()
                if section not in defaults:
                    fail(f"{rel(path)}:{lineno}: {name}: no section [{section}] in settings.toml")
                elif key not in defaults[section]:
                    fail(f"{rel(path)}:{lineno}: {name}: no key {section}.{key} in settings.toml")
    ok(f"{count} WS__SECTION__KEY references in deploy/ all name keys of settings.toml")


def check_settings_file(defaults: dict) -> None:
    path = K8S / "settings.toml"
    settings = tomllib.loads(path.read_text(encoding="utf-8"))
    bad = 0
    for section, values in settings.items():
        if section not in defaults:
            fail(f"{rel(path)}: unknown section [{section}]")
            bad += 1
            continue
        for key, value in values.items():
            if key not in defaults[section]:
                fail(f"{rel(path)}: unknown key {section}.{key}")
                bad += 1
            elif type(value) is not type(defaults[section][key]):
                fail(f"{rel(path)}: {section}.{key} is {type(value).__name__}, "
                     f"settings.toml's default is {type(defaults[section][key]).__name__}")
                bad += 1
    if not bad:
        ok(f"{rel(path)} uses only keys of settings.toml, with the default's types")


# ------------------------------------------------------------------------------------------
# 5. Dockerfile
# ------------------------------------------------------------------------------------------


def check_dockerfile() -> None:
    path = DEPLOY / "Dockerfile"
    text = path.read_text(encoding="utf-8")
    # Join continuation lines, drop comments.
    lines = [line for line in re.sub(r"\\\n", " ", text).splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
                    for line in lines]
    # Global ARG defaults, so that `FROM debian:${DEBIAN_RELEASE}-slim` can be checked.
    build_args = dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(lines), re.M))
    instructions = [(ins, re.sub(r"\$\{(\w+)\}", lambda m: build_args.get(m[1], m[0]), args))
                    if ins == "FROM" else (ins, args) for ins, args in instructions]
    stages = [args for ins, args in instructions if ins == "FROM"]
    if len(stages) < 2:
        fail("Dockerfile is not multi-stage")
    final = len(instructions) - [ins for ins, _ in instructions][::-1].index("FROM") - 1
    runtime = instructions[final:]

    def has(ins: str, pattern: str, where=runtime) -> bool:
        return any(i == ins and re.search(pattern, a) for i, a in where)

    checks = [
        (has("RUN", r"cargo build --release --locked --bin websocket-service", instructions),
         "release build of the websocket-service binary"),
        (re.search(r"(bookworm-slim|distroless)", instructions[final][1]) is not None,
         f"small runtime base ({instructions[final][1]})"),
        (has("USER", r"^(?!0\b|root\b)\S+"), "non-root USER in the runtime stage"),
        (has("STOPSIGNAL", r"^SIGTERM$"), "STOPSIGNAL SIGTERM"),
        (has("HEALTHCHECK", r"/healthz"), "HEALTHCHECK on /healthz"),
        (has("EXPOSE", r"\b8080\b"), "EXPOSE 8080"),
        (has("ENTRYPOINT", r"websocket-service"), "ENTRYPOINT is the binary (exec form)"),
        (has("CMD", r"--config.*/etc/websocket-service/settings\.toml"),
         "reads --config /etc/websocket-service/settings.toml"),
    ]
    for passed, what in checks:
        (ok if passed else fail)(f"Dockerfile: {what}")
    for ins, args in runtime:
        if ins == "COPY" and "--from" not in args:
            source = args.split()[0]
            if not (ROOT / source).exists():
                fail(f"Dockerfile: COPY source {source} does not exist in the build context")
    ignore = DEPLOY / "Dockerfile.dockerignore"
    if not ignore.is_file() or "target" not in ignore.read_text().split():
        fail("deploy/Dockerfile.dockerignore must exclude target/ from the build context")

    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    if not hadolint:
        print("skip hadolint (not installable on this platform)")
        return
    result = subprocess.run(
        [hadolint, "--config", str(DEPLOY / "check" / "hadolint.yaml"), str(path)],
        capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        fail(f"hadolint deploy/Dockerfile:\n{result.stdout}{result.stderr}")
    else:
        ok("hadolint deploy/Dockerfile")


# ------------------------------------------------------------------------------------------
# 6. The real binary
# ------------------------------------------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for name, value in re.findall(r"(\w+)=(\S+)", line):
                env[name] = value
    return env


def run_server(binary: Path, config: Path | None, env: dict[str, str], what: str) -> None:
    """Starts the server with `env` (bind forced to 127.0.0.1:0), waits for /healthz 200, SIGTERM,
    expects exit 0."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("WS__")}
    child_env.update(env)
    child_env["WS__SERVER__BIND"] = "127.0.0.1:0"
    child_env["WS__TELEMETRY__LOG_FORMAT"] = "json"
    child_env["WS__SHUTDOWN__DRAIN_TIMEOUT_S"] = "1"
    # Trace export to a collector that is not there would only log errors; keep the check quiet.
    child_env["WS__TELEMETRY__OTLP_ENDPOINT"] = ""
    args = [str(binary)] + (["--config", str(config)] if config else [])
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(args, env=child_env, cwd=tmp, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            addr = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None and addr is None:
                for line in log_path.read_text().splitlines():
                    if '"listening"' in line:
                        addr = json.loads(line).get("addr")
                time.sleep(0.05)
            if addr is None:
                fail(f"server with {what} did not start (exit {proc.poll()}): "
                     f"{log_path.read_text().strip()[-600:]}")
                return
            with urllib.request.urlopen(f"http://{addr}/healthz", timeout=5) as reply:
                status = reply.status
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
            if status != 200 or code != 0:
                fail(f"server with {what}: /healthz {status}, exit {code} after SIGTERM")
            else:
                ok(f"server starts with {what}, answers /healthz 200, exits 0 on SIGTERM")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_binary(docs: dict[Path, list]) -> None:
    binary = Path(os.environ.get("SERVER_BIN", ROOT / "target" / "debug" / "websocket-service"))
    if not binary.is_file():
        print(f"skip running the server ({binary} not built; `cargo build` enables this check)")
        return
    # Kubernetes: ConfigMap settings + Deployment env + every key of the Secret example.
    deployment = docs[K8S / "deployment.yaml"][0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = dockerfile_env()
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    for doc in docs.get(K8S / "secret.example.yaml", []):
        env.update({k: str(v) for k, v in doc.get("stringData", {}).items()})
    run_server(binary, K8S / "settings.toml", env, "the Kubernetes settings, env and Secret")
    # Compose: the image's settings.toml (the repository's) + Dockerfile ENV + compose env.
    compose = docs[DEPLOY / "compose.yaml"][0]
    env = dockerfile_env()
    env.update({k: str(v) for k, v in compose["services"]["websocket-service"]["environment"].items()})
    run_server(binary, ROOT / "settings.toml", env, "the compose environment")


def main() -> int:
    defaults = tomllib.loads((ROOT / "settings.toml").read_text(encoding="utf-8"))
    docs = check_parse()
    objects = kustomize_render(docs)
    validate_schemas(objects)
    kubectl_render_check(objects)
    check_k8s_semantics(objects, docs, defaults)
    check_compose(docs)
    check_env_names(defaults)
    check_settings_file(defaults)
    check_dockerfile()
    check_binary(docs)
    print()
    if failures:
        print(f"check-deploy: {len(failures)} failure(s)")
        return 1
    print("check-deploy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
