"""Loading deploy/ files and the versions they must agree with (the installed Ray, pyproject)."""

from __future__ import annotations

import shlex
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from tests.deploy import DEPLOY, REPO

RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
SECRETS = DEPLOY / "kuberay" / "secrets.example.yaml"
RAY_UP = DEPLOY / "ray-up" / "cluster.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
README = DEPLOY / "README.md"

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


def pod_templates(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod template of the head ("head") and of each worker group (by group name)."""
    spec = cluster["spec"]
    templates = {"head": spec["headGroupSpec"]["template"]}
    templates.update({g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]})
    return templates


def ray_start_argv(params: dict[str, str]) -> list[str]:
    """`ray start` flags as KubeRay writes them (`--key=value`, sorted), split into words as a
    POSIX shell splits that command line (shlex: quotes removed, e.g. the resources' JSON)."""
    return shlex.split(" ".join(f"--{key}={params[key]}" for key in sorted(params)))


def ray_up_config() -> dict[str, Any]:
    return yaml.safe_load(RAY_UP.read_text())


def head_flags(command: str) -> dict[str, str]:
    """`--flag value` pairs of a star-head command line (`--max-jobs 8` -> {"--max-jobs": "8"})."""
    argv = shlex.split(command)
    return {word: argv[i + 1] for i, word in enumerate(argv[:-1]) if word.startswith("--")}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


class Instruction(NamedTuple):
    cmd: str  # FROM, RUN, COPY, ... (upper case)
    flags: tuple[str, ...]  # --chown=..., --chmod=...
    value: tuple[str, ...]  # RUN: the whole shell line; otherwise the words


def read_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, backslash-continued lines joined."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        cmd, _, rest = pending.strip().partition(" ")
        pending = ""
        if cmd.upper() == "RUN":
            out.append(Instruction("RUN", (), (" ".join(rest.split()),)))
            continue
        words = shlex.split(rest)
        flags = tuple(w for w in words if w.startswith("--"))
        out.append(Instruction(cmd.upper(), flags, tuple(w for w in words if w not in flags)))
    return out


def dockerfile_instructions() -> list[Instruction]:
    return read_dockerfile(DOCKERFILE.read_text())


def ray_image() -> str:
    """The rayproject/ray image the Dockerfile builds on, its ARGs filled in."""
    (first_from, *_) = [c for c in dockerfile_instructions() if c.cmd == "FROM"]
    image = first_from.value[0]
    for name, value in global_args().items():
        image = image.replace(f"${{{name}}}", value)
    return image


def global_args() -> dict[str, str]:
    """The Dockerfile's ARGs declared before its first FROM, with their defaults."""
    args = {}
    for cmd in dockerfile_instructions():
        if cmd.cmd == "FROM":
            break
        if cmd.cmd == "ARG":
            name, _, default = cmd.value[0].partition("=")
            args[name] = default
    return args
