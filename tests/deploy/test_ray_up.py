"""deploy/ray-up/cluster.yaml, the `ray up` cluster config for VMs (AWS).

Offline: the config goes through what `ray up` does before it touches a cloud (Ray's
`prepare_config`, then `validate_config`, which checks it against the ray-schema.json that Ray
ships, with jsonschema), its shell commands are parsed by bash, and the fields that make the
deployment work are checked one by one.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray._private.authentication.authentication_token_setup import _get_default_token_path
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.deploy import REPO
from tests.deploy.manifests import RAY_UP, RAY_VERSION, README, ray_image

RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
STAR_HEAD = "~/star/deploy/docker/star-head.sh"
# AWS's public SSM parameter that names the current Deep Learning Base OSS Nvidia Driver GPU AMI
# (Ubuntu 24.04, x86_64) of a region; EC2 resolves `resolve:ssm:<parameter>` at launch.
DLAMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
)
AMI_ID = re.compile(r"ami-[0-9a-f]{8}([0-9a-f]{9})?")


def rays_default_amis() -> dict[str, str]:
    """DEFAULT_AMI of Ray's AWS provider (region -> AMI id), the AMIs `ray up` fills in for a
    node type without ImageId, read from Ray's source (importing it needs boto3)."""
    source = Path(ray.autoscaler.__file__).parent / "_private" / "aws" / "config.py"
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DEFAULT_AMI":
            return ast.literal_eval(node.value)
    raise AssertionError(f"no DEFAULT_AMI in {source}")


def config() -> dict[str, Any]:
    return yaml.safe_load(RAY_UP.read_text())


def all_commands(cfg: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands")
    keys += ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    commands = [c for key in keys for c in cfg.get(key, [])]
    for node_type in cfg["available_node_types"].values():
        commands += node_type.get("worker_setup_commands", [])
    return commands


def test_config_passes_rays_own_preparation_and_validation():
    prepared = prepare_config(config())
    validate_config(prepared)  # raises on any schema violation
    assert set(prepared["available_node_types"]) == {"head", "learner", "cpu_worker", "gpu_worker"}


def test_raw_config_matches_ray_schema_json():
    jsonschema.validate(config(), json.loads(RAY_SCHEMA.read_text()))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c["available_node_types"]["gpu_worker"].update(worker_setup_command=[]),
            "'worker_setup_command' was unexpected",
        ),
        (
            lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU=0.5),
            "0.5 is not of type 'integer'",
        ),
        (lambda c: c["docker"].update(imag="x"), "'imag' was unexpected"),
    ],
)
def test_validation_rejects_unknown_fields_and_wrong_types(mutate, message):
    broken = copy.deepcopy(config())
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError, match=message):
        validate_config(prepare_config(broken))


@pytest.mark.processes  # runs bash -n
def test_every_command_is_valid_bash():
    for command in all_commands(config()):
        result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr)


def test_one_image_of_the_projects_ray_and_python_on_every_node():
    cfg = config()
    assert cfg["docker"]["image"] == ray_image()  # the Dockerfile's base image
    assert ray_image().startswith(f"rayproject/ray:{RAY_VERSION}-")
    for node_type in cfg["available_node_types"].values():
        assert "worker_image" not in node_type.get("docker", {})
    # Setup refuses to continue if installing STAR replaced the image's Ray.
    assert f"assert ray.__version__ == '{RAY_VERSION}'" in cfg["setup_commands"][0]


def test_setup_installs_the_project_from_this_repository():
    cfg = config()
    assert cfg["file_mounts"]["~/star"] == "."
    assert cfg["rsync_filter"] == [".gitignore"]
    install = cfg["setup_commands"][0]
    assert install.startswith("cd ~/star && if [ -f constraints.txt ]; then")
    assert "pip install --no-cache-dir -c constraints.txt ." in install
    assert "else pip install --no-cache-dir . ; fi && pip check &&" in install


def ray_start_flags(command: str) -> dict[str, str]:
    start = command[command.index("ray start") :]
    words = shlex.split(start)[2:]
    return dict(w.removeprefix("--").split("=", 1) if "=" in w else (w[2:], "") for w in words)


def test_head_schedules_no_ray_work_and_keeps_the_dashboard_on_loopback():
    cfg = config()
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"] == {"CPU": 0}
    (start,) = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    flags = ray_start_flags(start)
    assert flags["num-cpus"] == "0"
    assert flags["dashboard-host"] == "127.0.0.1"
    assert flags["metrics-export-port"] == "8080"
    assert "head" in flags


def test_head_starts_star_serve_in_the_background_after_ray():
    commands = config()["head_start_ray_commands"]
    stop, ray_stop, ray_start, serve = commands
    assert stop == f"bash {STAR_HEAD} --stop"  # an earlier service goes first
    assert ray_stop == "ray stop" and "ray start --head" in ray_start
    assert (REPO / "deploy" / "docker" / "star-head.sh").exists()
    assert serve.startswith('STAR_TOKEN="$(cat ~/star-secrets/api_token)" nohup bash ')
    assert serve.endswith("> ~/star-serve.log 2>&1 &")
    argv = shlex.split(serve.split(" nohup ", 1)[1].removesuffix("> ~/star-serve.log 2>&1 &"))
    assert argv[:2] == ["bash", STAR_HEAD]
    assert dict(zip(argv[2::2], argv[3::2], strict=True)) == {
        "--host": "0.0.0.0",
        "--port": "50051",
        "--data-dir": "~/star-data",
        "--tls-cert": "~/star-secrets/tls.crt",
        "--tls-key": "~/star-secrets/tls.key",
        "--max-jobs": "8",
    }


def test_service_data_lives_on_the_head_vm_outside_the_container():
    cfg = config()
    (volume,) = cfg["docker"]["head_run_options"]
    host, container = volume.removeprefix("--volume ").split(":")
    assert container == "/home/ray/star-data"  # ~/star-data of the ray user
    assert f"mkdir -p {host}" in cfg["initialization_commands"]


def test_ray_token_authentication_on_every_node():
    cfg = config()
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    token_file = "~/" + str(_get_default_token_path().relative_to(Path.home()))
    assert cfg["file_mounts"][token_file] == token_file  # the laptop's token, on every node
    assert cfg["file_mounts"]["~/star-secrets"] == "~/.star/cluster"


def test_gpu_node_type_has_a_gpu_the_star_gpu_node_resource_and_jax_cuda():
    cfg = config()
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["resources"]["star_gpu_node"] == 1
    assert gpu["docker"]["worker_run_options"] == [
        "--gpus all",
        "--env XLA_PYTHON_CLIENT_PREALLOCATE=false",
    ]
    install, jax_cuda = gpu["worker_setup_commands"]
    assert install == cfg["setup_commands"][0]  # its own list replaces the global one
    # The same pins as the cuda12 image (the repository is at ~/star on every node).
    constraints = "~/star/deploy/docker/cuda12-constraints.txt"
    assert (REPO / constraints.removeprefix("~/star/")).is_file()
    assert jax_cuda.startswith(
        f'pip install --no-cache-dir -c {constraints} "jax[cuda12]==$(python -c'
    )
    assert jax_cuda.endswith("&& pip check")
    cpu = cfg["available_node_types"]["cpu_worker"]
    assert "GPU" not in cpu["resources"] and cpu["resources"]["CPU"] >= 1


def test_workers_join_the_head_and_export_metrics():
    (start,) = [c for c in config()["worker_start_ray_commands"] if "ray start" in c]
    flags = ray_start_flags(start)
    assert flags["address"] == "$RAY_HEAD_IP:6379"
    assert flags["metrics-export-port"] == "8080"


def test_every_node_type_names_a_deep_learning_base_gpu_ami():
    """Without an ImageId Ray falls back to its end-of-life DLAMI; every node type names the
    current Deep Learning Base GPU AMI (NVIDIA driver, Docker, container toolkit) instead."""
    cfg = config()
    default_amis = rays_default_amis()
    assert cfg["provider"]["region"] in default_amis  # a region Ray would otherwise fill in
    for name, node_type in cfg["available_node_types"].items():
        image = node_type["node_config"].get("ImageId", "")
        assert image == f"resolve:ssm:{DLAMI_PARAMETER}" or AMI_ID.fullmatch(image), name
        assert image not in default_amis.values(), name
    text = README.read_text()
    assert f"--name {DLAMI_PARAMETER}" in text  # how to look the id up per region
    assert f"--name {DLAMI_PARAMETER}" in RAY_UP.read_text()


def test_ray_down_warns_that_the_heads_disk_and_the_data_go_with_it():
    cfg = config()
    (volume,) = cfg["docker"]["head_run_options"]
    host_dir, container_dir = volume.removeprefix("--volume ").split(":")
    header = RAY_UP.read_text().split("\ncluster_name:")[0]
    assert "WARNING: `ray down` TERMINATES THE HEAD VM AND DELETES ITS DISK" in header
    assert host_dir in header  # names the folder that is lost
    keep = f"ray rsync-down deploy/ray-up/cluster.yaml {container_dir}/ ./star-data/"
    text = README.read_text()
    for where in (header, text):
        assert keep in where
        assert "bash ~/star/deploy/docker/star-head.sh --stop" in where  # a consistent copy
    assert "> **Warning: `ray down` deletes the service's data.**" in text
    assert "DeleteOnTermination" in text and f"mounted at `{host_dir}`" in text
