"""docker-compose.yml and k8s/ are written for users: parse and cross-check them offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.config import PRIORITY_QUEUES

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"


def _queues(args: list[str]) -> set[str]:
    return set(args[args.index("-Q") + 1].split(",")) if "-Q" in args else set()


def _celery_role(args: list[str]) -> str:
    assert args[:3] == ["celery", "-A", "workers"], args
    assert args[3] in ("worker", "beat", "flower"), args
    return args[3]


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


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
    assert "--appendonly" in redis and "noeviction" in redis
    for volume in services["prometheus"]["volumes"]:
        assert (REPO / volume.split(":")[0]).exists(), volume


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


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
    for deployment in deployments.values():
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if _celery_role(args) == "worker":
            covered |= _queues(args)
    assert set(PRIORITY_QUEUES) <= covered
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == yaml.safe_load(
        (REPO / "config.yaml").read_text()
    ), "k8s/configmap.yaml must carry the same config.yaml"
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert all(v in ("", "redis://redis:6379/0") for v in secret["stringData"].values())
