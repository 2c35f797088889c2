"""deploy/docker: the container image (targets `cpu` and `cuda12`), read offline.

hadolint parses and lints the Dockerfile; a small reader here (instructions, their flags and
arguments) lets the tests compare what it builds on with the versions the project runs, and show
that the files it copies are enough to build the project's wheel.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.deploy import REPO, dev_tool
from tests.deploy.manifests import (
    DOCKERFILE,
    RAY_VERSION,
    Instruction,
    dockerfile_instructions,
    global_args,
    pyproject,
)

DOCKERIGNORE = DOCKERFILE.with_name("Dockerfile.dockerignore")
CUDA_CONSTRAINTS = DOCKERFILE.with_name("cuda12-constraints.txt")
RAY_IMAGE = "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu"
OPTIONAL_SOURCES = {"constraints.tx[t]"}  # a glob that copies constraints.txt when it exists


def stages() -> dict[str, list[Instruction]]:
    """Instructions by stage name (the name after AS), in file order."""
    out: dict[str, list[Instruction]] = {}
    current = None
    for cmd in dockerfile_instructions():
        if cmd.cmd == "FROM":
            current = cmd.value[-1]
            out[current] = []
        elif current is not None:
            out[current].append(cmd)
    return out


def copy_sources(stage: list[Instruction]) -> list[str]:
    return [src for cmd in stage if cmd.cmd == "COPY" for src in cmd.value[:-1]]


def install_sources(stage: list[Instruction]) -> list[str]:
    """Sources copied into the build directory (destination ./...), from which pip installs."""
    return [
        src
        for cmd in stage
        if cmd.cmd == "COPY" and cmd.value[-1].startswith("./")
        for src in cmd.value[:-1]
    ]


def run_lines(stage: list[Instruction]) -> str:
    return "\n".join(cmd.value[0] for cmd in stage if cmd.cmd == "RUN")


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env = {}
    for cmd in stage:
        if cmd.cmd == "ENV":
            env.update(word.split("=", 1) for word in cmd.value)
    return env


def test_stages_and_default_target():
    names = list(stages())
    assert names == ["base", "cuda12", "cpu"]  # the last stage, `cpu`, is what a plain build makes
    froms = [cmd.value for cmd in dockerfile_instructions() if cmd.cmd == "FROM"]
    assert froms == [(RAY_IMAGE, "AS", "base"), ("base", "AS", "cuda12"), ("base", "AS", "cpu")]


def test_base_image_has_the_ray_and_python_the_project_runs():
    args = global_args()
    assert args["RAY_VERSION"] == RAY_VERSION
    match = re.fullmatch(r"py3(\d+)", args["PYTHON_TAG"])
    assert match, args["PYTHON_TAG"]
    image_python = f"3.{match.group(1)}"
    assert image_python in SpecifierSet(pyproject()["project"]["requires-python"])
    constraints = REPO / "constraints.txt"
    if constraints.exists():  # the pinned Ray, when the project pins its dependencies
        pins = re.findall(r"^ray(?:\[[^]]*\])?==([^\s;#]+)", constraints.read_text(), re.M)
        assert pins == [RAY_VERSION]
    # The build re-checks the installed Ray against the ARG, so a resolver cannot swap it.
    base_run = run_lines(stages()["base"])
    assert "ray.__version__ == '${RAY_VERSION}'" in base_run


def test_copies_the_project_and_installs_it_with_or_without_constraints():
    base = stages()["base"]
    sources = install_sources(base)
    packages = {
        p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert {"pyproject.toml", pyproject()["project"]["readme"], *packages} <= set(sources)
    assert set(sources) >= OPTIONAL_SOURCES
    for src in set(sources) - OPTIONAL_SOURCES:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
    install = run_lines(base)
    assert "if [ -f constraints.txt ]" in install
    assert "pip install --no-cache-dir -c constraints.txt ." in install
    assert "pip install --no-cache-dir ." in install


def test_every_install_is_followed_by_pip_check():
    """A resolver that leaves an unmet requirement behind fails the build, not a worker."""
    for name, stage in stages().items():
        for cmd in (c for c in stage if c.cmd == "RUN" and "pip install" in c.value[0]):
            line = cmd.value[0]
            assert "&& pip check" in line[line.rindex("pip install") :], (name, line)


def test_dockerignore_lets_exactly_the_copied_files_through():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything else (.venv, .git, results) stays out of the context
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {s.replace("[t]", "t") for stage in stages().values() for s in copy_sources(stage)}
    assert copied == allowed


def test_every_stage_runs_as_the_numeric_non_root_ray_user():
    for name, stage in stages().items():
        users = [cmd.value[0] for cmd in stage if cmd.cmd == "USER"]
        assert users and users[-1] == "1000:100", name


def test_cpu_target_pins_jax_to_cpu_and_cuda_target_adds_jax_cuda_wheels():
    all_stages = stages()
    assert env_of(all_stages["cpu"]) == {"JAX_PLATFORMS": "cpu"}
    cuda = all_stages["cuda12"]
    assert env_of(cuda) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    # jax[cuda12] pinned to the image's JAX, so every node runs the same JAX, and the CUDA wheels
    # it brings pinned by the constraints file that the stage copies in.
    (copy,) = [cmd for cmd in cuda if cmd.cmd == "COPY"]
    assert copy.value[0] == str(CUDA_CONSTRAINTS.relative_to(REPO))
    in_image = copy.value[1].rstrip("/") + "/" + CUDA_CONSTRAINTS.name
    installed_jax = "$(python -c 'import jax; print(jax.__version__)')"
    assert f'pip install --no-cache-dir -c {in_image} "jax[cuda12]=={installed_jax}"' in run_lines(
        cuda
    )


def cuda_pins() -> dict[str, Requirement]:
    lines = CUDA_CONSTRAINTS.read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in pins}


def test_cuda_wheels_are_pinned_to_the_projects_jax():
    pins = cuda_pins()
    for name, pin in pins.items():
        (spec,) = pin.specifier
        assert spec.operator == "==", pin  # exact versions only
        plugin = name in {"jax-cuda12-plugin", "jax-cuda12-pjrt"}
        assert plugin or re.fullmatch(r"nvidia-[a-z-]+-cu12", name), name  # CUDA 12 wheels only
    jax_version = version("jax")
    assert str(pins["jax-cuda12-plugin"].specifier) == f"=={jax_version}"
    assert str(pins["jax-cuda12-pjrt"].specifier) == f"=={jax_version}"
    constraints = REPO / "constraints.txt"
    if constraints.exists():  # the JAX the project pins is the one installed here
        assert f"jax=={jax_version}" in constraints.read_text().split()
    # CUDA 12: the runtime wheel the plugin loads is a 12.x release.
    assert str(pins["nvidia-cuda-runtime-cu12"].specifier).startswith("==12.")


def test_cuda_pins_meet_jax_cuda12_extra():
    """Every requirement of jax's `cuda12` extra (from the installed jax's metadata) is pinned
    here, or is jaxlib (the project's own pin), at a version it accepts."""
    env = {**default_environment(), "extra": "cuda12", "sys_platform": "linux"}
    extra = [Requirement(text) for text in requires("jax") or [] if Requirement(text).marker]
    needed = [r for r in extra if r.marker.evaluate(env)]
    assert {canonicalize_name(r.name) for r in needed} >= {"jax-cuda12-plugin"}
    pins = cuda_pins()
    for requirement in needed:
        name = canonicalize_name(requirement.name)
        pinned = version(name) if name == "jaxlib" else str(pins[name].specifier).lstrip("=")
        assert pinned in requirement.specifier, (requirement, pinned)


def test_star_head_is_installed_as_an_executable():
    (copy,) = [cmd for cmd in stages()["base"] if cmd.cmd == "COPY" and "--chmod=0755" in cmd.flags]
    assert copy.value == ("deploy/docker/star-head.sh", "/usr/local/bin/star-head")


@pytest.mark.processes  # runs hadolint
def test_hadolint_passes():
    result = subprocess.run([dev_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.processes  # runs pip wheel
def test_the_copied_files_build_the_project_wheel(tmp_path: Path):
    """What the image's `pip install .` gets is enough to build STAR with its `star` command."""
    for requirement in map(Requirement, pyproject()["build-system"]["requires"]):
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            installed = None
        if installed is None or installed not in requirement.specifier:
            pytest.fail(
                f"build backend {requirement} is not installed here ({installed}): "
                f"pip install '{requirement}' (the dev environment needs it)",
                pytrace=False,
            )
    context = tmp_path / "context"
    context.mkdir()
    for src in install_sources(stages()["base"]):
        path = REPO / src
        if src in OPTIONAL_SOURCES or not path.exists():
            continue
        if path.is_dir():
            shutil.copytree(path, context / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, context / src)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(context),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name.startswith(f"star_lopt-{pyproject()['project']['version']}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert {"star_core/__init__.py", "services/__init__.py", "services/cli/main.py"} <= names
    assert "star = services.cli.main:main" in scripts
