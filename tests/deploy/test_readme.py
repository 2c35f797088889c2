"""deploy/README.md says what the files do: names, paths and flags in its commands match them."""

from __future__ import annotations

import re

from tests.deploy import DEPLOY, REPO
from tests.deploy.manifests import (
    RAY_VERSION,
    env_of,
    global_args,
    project_version,
    ray_container,
    raycluster,
)

README = DEPLOY / "README.md"


def readme() -> str:
    return README.read_text()


def test_every_deploy_file_it_names_exists():
    named = set(re.findall(r"`((?:docker|kuberay|ray-up|monitoring)/[\w./-]+)`", readme()))
    named |= {m[len("deploy/") :] for m in re.findall(r"deploy/[\w./-]+\w", readme())}
    assert "kuberay/raycluster.yaml" in named
    missing = sorted(p for p in named if not (DEPLOY / p).exists() and not p.endswith("/"))
    assert missing == []


def test_secret_commands_create_what_the_raycluster_reads():
    text = readme()
    head = raycluster()["spec"]["headGroupSpec"]["template"]
    token_ref = env_of(ray_container(head))["STAR_TOKEN"]["valueFrom"]["secretKeyRef"]
    volumes = {v["name"]: v for v in head["spec"]["volumes"]}
    tls_secret = volumes["star-api-tls"]["secret"]["secretName"]
    assert (
        f"kubectl create secret generic {token_ref['name']} "
        f"--from-file={token_ref['key']}=$HOME/.star/cluster/api_token"
    ) in text
    assert f"kubectl create secret tls {tls_secret} " in text


def test_image_commands_build_the_tags_the_raycluster_uses():
    text = readme()
    images = {
        ray_container(g["template"])["image"] for g in raycluster()["spec"]["workerGroupSpecs"]
    }
    placeholder = images.pop().rsplit(":", 1)[0]
    assert f'sed "s#{placeholder}#$REGISTRY/star-lopt#"' in text
    assert f"VERSION={project_version()} " in text
    for target in ("cpu", "cuda12"):
        assert f"--target {target} " in text and f"$REGISTRY/star-lopt:$VERSION-{target} ." in text


def test_versions_it_states_are_the_projects():
    text = readme()
    python = "3." + global_args()["PYTHON_TAG"].removeprefix("py3")
    assert f"**Ray {RAY_VERSION} on Python {python}**" in text
    assert f'pip install "ray[default]=={RAY_VERSION}" boto3' in text
    assert f"rayproject/ray:{RAY_VERSION}-{global_args()['PYTHON_TAG']}-cpu" in text


def test_certificate_recipe_names_localhost_for_port_forwards():
    (san,) = re.findall(r'-addext "subjectAltName=([^"]+)"', readme())
    assert {"DNS:localhost", "IP:127.0.0.1"} <= set(san.split(","))
    assert (REPO / "proto" / "star" / "v1" / "job.proto").exists()  # the spec format it cites
