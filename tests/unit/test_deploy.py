"""docker-compose.yml, the Dockerfile and k8s/ are written for users: check them offline.

Schema: every manifest against the Kubernetes 1.30 OpenAPI schema (kubernetes-validate,
strict). Policy, as an admission controller would apply it: every container has readiness
and liveness probes (and the startup probe the fleet's slow starts need), runs as a numeric
non-root user on a read-only root filesystem, has resources; required secrets have no
empty or optional reference; the exchange URL works in-cluster; state paths are absolute and
on a writable volume. Compose: healthchecks, ``service_healthy`` dependencies, no secret
with an empty default.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from core.config import PRIORITY_QUEUES
from core.config_loader import load_config

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"
SECRET = "crypto-ai-secrets"
#: Secret keys without which the fleet must not start (Flower's auth, Redis's password).
REQUIRED_SECRETS = {"REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}
#: What k8s/configmap.yaml changes in config.yaml for the cluster (and nothing else).
IN_CLUSTER = {
    ("exchanges", "binance", "base_url"): "http://sandbox:8901",
    ("exchanges", "binance", "is_sandbox"): True,
    ("exchanges", "binance", "sandbox", "state_file"): "/var/lib/crypto-ai/sandbox-binance.json",
    ("redis", "embedded", "dir"): "/var/lib/crypto-ai/redis",
    ("reports", "dir"): "/var/lib/crypto-ai/reports",
    ("tracing", "dir"): "/var/lib/crypto-ai/traces",
}
#: Public exchange APIs the ConfigMap may name instead of the in-cluster sandbox.
PUBLIC_EXCHANGES = (".binance.com", ".okx.com", ".kraken.com", ".coinbase.com", ".htx.com")


def _queues(args: list[str]) -> set[str]:
    return set(args[args.index("-Q") + 1].split(",")) if "-Q" in args else set()


def _celery_role(args: list[str]) -> str:
    if args[0] == "start-flower":  # deploy/start-flower.sh: Flower behind basic auth
        return "flower"
    assert args[:3] == ["celery", "-A", "workers"], args
    assert args[3] in ("worker", "beat", "flower"), args
    return args[3]


# -- docker-compose.yml ---------------------------------------------------------------------


def compose_text() -> str:
    return (REPO / "docker-compose.yml").read_text()


def compose() -> dict[str, Any]:
    return yaml.safe_load(compose_text())  # type: ignore[no-any-return]


def test_compose_services_run_commands_that_exist_and_every_queue_has_a_worker() -> None:
    services = compose()["services"]
    roles: dict[str, list[str]] = {}
    covered: set[str] = set()
    for name, service in services.items():
        command = service.get("command")
        if "build" not in service:
            continue
        if command[0] == "crypto-ai":
            from workers.cli import app

            assert command[1] in {c.name or c.callback.__name__ for c in app.registered_commands}, (
                name
            )
            continue
        role = _celery_role(command)
        roles.setdefault(role, []).append(name)
        covered |= _queues(command)
    assert set(PRIORITY_QUEUES) <= covered
    assert len(roles["beat"]) == 1
    assert roles["flower"]
    redis = services["redis"]["command"]
    assert "--appendonly" in redis and "noeviction" in redis and "--requirepass" in redis
    for volume in services["prometheus"]["volumes"]:
        assert (REPO / volume.split(":")[0]).exists(), volume


def test_compose_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    services = compose()["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on as a list does not wait"
        for needed, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, (name, needed)
            assert "healthcheck" in services[needed], (name, needed)
        if "build" in service and name != "sandbox":
            assert "redis" in depends, f"{name} starts before Redis is healthy"
    for name in ("worker-high", "worker-medium", "worker-low"):
        probe = services[name]["healthcheck"]["test"]
        node = services[name]["command"][services[name]["command"].index("-n") + 1]
        assert probe[1:] == ["python", "-m", "workers.probe", "worker", "--node", node]


def test_compose_requires_the_secrets_that_matter_and_defaults_none_to_empty() -> None:
    text = compose_text()
    for key in REQUIRED_SECRETS:
        assert re.search(r"\$\{" + key + r":\?[^}]+\}", text), f"{key} is not required"
        assert not re.search(r"\$\{" + key + r"(:?-)", text), f"{key} has a default"
    flower = compose()["services"]["flower"]
    assert flower["command"][0] == "start-flower"
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    assert "${REDIS_PASSWORD:?" in compose()["x-fleet"]["environment"]["REDIS_URL"]


# -- Dockerfile -----------------------------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    """Return the ENV the image sets (``ENV A=1 \\ B=2`` lines)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, value = pair.split("=", 1)
                env[key] = value
    return env


def test_dockerfile_runs_as_a_numeric_user_that_owns_the_state_directory() -> None:
    text = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    uid, gid = users[-1].split(":")
    assert f"--uid {uid}" in text and f"--gid {gid}" in text
    assert f"chown {uid}:{gid} /var/lib/crypto-ai" in text
    env = dockerfile_env()
    state = [k for k in env if k.startswith("CRYPTO_AI__") and k.endswith("__DIR")]
    assert state and all(env[k].startswith("/var/lib/crypto-ai/") for k in state), env
    assert "COPY deploy/start-flower.sh /usr/local/bin/start-flower" in text


# -- k8s/ -----------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def workloads() -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] in ("Deployment", "StatefulSet")]


def containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Return (pod spec, container) for every container of every workload."""
    found = []
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        found += [(pod, c) for c in pod["containers"] + pod.get("initContainers", [])]
    return found


def container_ids() -> list[str]:
    return [c["name"] for _, c in containers()]


def in_cluster_config() -> dict[str, Any]:
    config_map = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")
    return yaml.safe_load(config_map["data"]["config.yaml"])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "doc", k8s_documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_k8s_manifest_is_valid_against_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_has_one_beat_and_every_queue_served() -> None:
    docs = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    beat = deployments["beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    covered: set[str] = set()
    roles: set[str] = set()
    for name, deployment in deployments.items():
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if name == "sandbox":
            assert args[:2] == ["crypto-ai", "sandbox"], args
            continue
        roles.add(_celery_role(args))
        if _celery_role(args) == "worker":
            covered |= _queues(args)
    assert set(PRIORITY_QUEUES) <= covered and roles == {"worker", "beat", "flower"}


def test_k8s_config_map_is_config_yaml_with_the_in_cluster_settings_only() -> None:
    expected = yaml.safe_load((REPO / "config.yaml").read_text())
    for path, value in IN_CLUSTER.items():
        section = expected
        for key in path[:-1]:
            section = section.setdefault(key, {})
        section[path[-1]] = value
    assert in_cluster_config() == expected, "k8s/configmap.yaml drifted from config.yaml"


@pytest.mark.parametrize(("pod", "container"), containers(), ids=container_ids())
def test_k8s_container_has_probes_a_numeric_non_root_user_and_resources(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe in container, f"{container['name']} has no {probe}"
        spec = container[probe]
        assert {"exec", "httpGet", "tcpSocket", "grpc"} & set(spec), (container["name"], probe)
    live, ready = container["livenessProbe"], container["readinessProbe"]
    patience = live["periodSeconds"] * live["failureThreshold"]
    assert patience >= ready["periodSeconds"] * ready["failureThreshold"], container["name"]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert security.get("runAsNonRoot") is True, container["name"]
    assert isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0
    assert isinstance(security.get("runAsGroup"), int) and security["runAsGroup"] > 0
    assert isinstance(pod["securityContext"].get("fsGroup"), int)
    assert security.get("readOnlyRootFilesystem") is True, container["name"]
    assert security.get("allowPrivilegeEscalation") is False, container["name"]
    resources = container.get("resources", {})
    assert resources.get("requests", {}).get("memory") and resources["requests"].get("cpu")
    assert resources.get("limits", {}).get("memory"), container["name"]
    writable = {m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")}
    assert "/tmp" in writable, f"{container['name']}: /tmp is read-only"


@pytest.mark.parametrize(("pod", "container"), containers(), ids=container_ids())
def test_k8s_fleet_probes_call_the_probe_module_with_the_worker_own_name(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    args = container.get("args", [])
    if args[:1] != ["celery"] or args[3] != "worker":
        return
    node = args[args.index("-n") + 1]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "workers.probe"], command
        assert command[-3:] == ["worker", "--node", node], command


def secret_refs(container: dict[str, Any]) -> list[dict[str, Any]]:
    refs = [e["valueFrom"]["secretKeyRef"] for e in container.get("env", []) if "valueFrom" in e]
    return refs + [e["secretRef"] for e in container.get("envFrom", []) if "secretRef" in e]


def test_k8s_required_secrets_are_referenced_without_optional_and_never_empty() -> None:
    secret = next(d for d in k8s_documents() if d["kind"] == "Secret")
    values = secret["stringData"]
    assert set(values) >= REQUIRED_SECRETS
    assert all(str(v).strip() for v in values.values()), "an empty secret value"
    needs = {"flower": {"FLOWER_BASIC_AUTH", "REDIS_PASSWORD"}, "redis": {"REDIS_PASSWORD"}}
    for _, container in containers():
        refs = secret_refs(container)
        for ref in refs:
            assert ref["name"] == SECRET
            if "key" not in ref or ref["key"] in REQUIRED_SECRETS:
                assert ref.get("optional") is not True, (container["name"], ref)
        required = {r["key"] for r in refs if "key" in r and not r.get("optional")}
        if container["name"] != "sandbox":
            assert needs.get(container["name"], {"REDIS_PASSWORD"}) <= required, container["name"]


def _run_guard(script: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(script, env=env, capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("value", ["", "CHANGE-ME", "admin"])
def test_flower_refuses_to_start_without_auth_or_with_the_template_placeholder(value: str) -> None:
    env = {"PATH": "/usr/bin:/bin"} | ({"FLOWER_BASIC_AUTH": value} if value else {})
    result = _run_guard(["sh", str(REPO / "deploy" / "start-flower.sh")], env)
    assert result.returncode == 64 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "FLOWER_BASIC_AUTH" in result.stderr


@pytest.mark.parametrize("value", [None, "", "CHANGE-ME"])
def test_k8s_redis_refuses_to_start_without_a_password(value: str | None) -> None:
    redis = next(d for d in workloads() if d["metadata"]["name"] == "redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    secret = next(d for d in k8s_documents() if d["kind"] == "Secret")
    if value == "CHANGE-ME":
        assert secret["stringData"]["REDIS_PASSWORD"] == value  # the template as shipped
    env = {"PATH": "/usr/bin:/bin"} | ({"REDIS_PASSWORD": value} if value is not None else {})
    result = _run_guard([*container["command"], *container["args"]], env)
    assert result.returncode == 64 and "REDIS_PASSWORD" in result.stderr, result


def test_k8s_exchange_url_resolves_in_the_cluster() -> None:
    services = {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Service"}
    deployments = {d["metadata"]["name"]: d for d in workloads()}
    for name, exchange in in_cluster_config()["exchanges"].items():
        url = urlsplit(exchange["base_url"])
        if url.scheme == "https" and url.hostname and url.hostname.endswith(PUBLIC_EXCHANGES):
            continue
        assert url.hostname in services, f"{name}: {url.hostname} is no Service in k8s/"
        service = services[url.hostname]
        assert url.port in {p["port"] for p in service["spec"]["ports"]}, name
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"{name}: Service {url.hostname} selects no workload"
        target = {p["targetPort"] for p in service["spec"]["ports"] if p["port"] == url.port}
        ports = {
            p["containerPort"]
            for d in selected
            for c in d["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        assert target <= ports, name
        assert exchange.get("is_sandbox") is True, f"{name}: a sandbox URL off this host"


@pytest.mark.parametrize(("pod", "container"), containers(), ids=container_ids())
def test_k8s_state_paths_are_absolute_and_on_a_writable_volume(
    pod: dict[str, Any], container: dict[str, Any], tmp_path: Path
) -> None:
    if container["image"].startswith("redis:"):
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/data" in mounts
        return
    env = dockerfile_env() | {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(in_cluster_config()))
    env["CRYPTO_AI_CONFIG"] = str(config_file)
    env["REDIS_URL"] = "redis://:pw@redis:6379/0"
    config = load_config(env=env)
    paths = [config.reports.dir, config.tracing.dir, config.redis.embedded.dir]
    paths += [e.sandbox.state_file for e in config.exchanges.values() if e.sandbox.state_file]
    args = container.get("args", [])
    if "-s" in args:
        paths.append(Path(args[args.index("-s") + 1]))
    paths.append(Path(env["PROMETHEUS_MULTIPROC_DIR"]))
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [
        Path(m["mountPath"])
        for m in container["volumeMounts"]
        if not m.get("readOnly")
        and ({"emptyDir", "persistentVolumeClaim"} & set(volumes[m["name"]]))
    ]
    for path in paths:
        assert path.is_absolute(), (container["name"], path)
        assert any(path.is_relative_to(mount) for mount in writable), (container["name"], path)


def test_every_metric_the_dashboard_plots_is_one_the_fleet_exports() -> None:
    board = json.loads((REPO / "deploy/grafana/dashboards/fleet.json").read_text())
    exported = set(
        re.findall(r'"(crypto_ai_[a-z_]+)"', (REPO / "monitoring/metrics.py").read_text())
    )
    plotted = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for panel in board["panels"]
        for target in panel["targets"]
        for name in re.findall(r"crypto_ai_[a-z_]+", target["expr"])
    }
    # counters are exported without their _total suffix in the source when prometheus adds it
    missing = {m for m in plotted if m not in exported and m.removesuffix("_total") not in exported}
    assert not missing, f"the dashboard plots metrics the fleet does not export: {missing}"
    for needed in (
        "crypto_ai_position_amount",
        "crypto_ai_unrealized_pnl",
        "crypto_ai_llm_tokens_total",
    ):
        assert needed in plotted, needed
