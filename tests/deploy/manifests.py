"""Loading deploy/ files and the versions they must agree with (the installed Ray, pyproject)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from tests.deploy import DEPLOY, REPO

RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
SECRETS = DEPLOY / "kuberay" / "secrets.example.yaml"
RAY_UP = DEPLOY / "ray-up" / "cluster.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"

# Where the cluster's Ray must match the project's: the Ray the project is installed with.
RAY_VERSION = version("ray")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def project_version() -> str:
    return pyproject()["project"]["version"]


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def raycluster() -> dict[str, Any]:
    return one(load_documents(RAYCLUSTER), "RayCluster")


def ray_container(template: dict[str, Any]) -> dict[str, Any]:
    """KubeRay treats the first container of a group's pod template as the Ray container."""
    return template["spec"]["containers"][0]


def worker_group(cluster: dict[str, Any], name: str) -> dict[str, Any]:
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    return groups[name]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}
