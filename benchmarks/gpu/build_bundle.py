"""Build the offline bundle that the GPU measurement (``run_device.sh``) installs on a machine
with no network.

The accelerator machine has JAX with CUDA, optax, safetensors, scikit-learn, grpcio and
protobuf in its image (Python 3.12), but not Ray, nor the service's small dependencies, and it
cannot reach a package registry. This script, run here (where pip reaches PyPI), writes into
``.offline/`` (ignored by git; carried to the device with ``carry: [".offline"]``):

- ``ray-<version>-<tag>.pruned.tar.xz``: the files of Ray's wheel at the version pinned in
  ``constraints.txt``, without what a local Ray instance for the service never loads (Java jars,
  RLlib, Data, Serve, Train, Tune, LLM, the dashboard's source maps), ``RECORD`` rewritten to
  match; ``install_bundle.py`` turns it back into a wheel there. Plain Ray (no ``[default]``
  extra): the device run starts Ray with ``include_dashboard=False``.
- ``wheels/``: every other distribution the device run may need and the image may lack, at the
  versions of ``constraints.txt``, for CPython 3.12 on manylinux x86-64, with their own
  dependencies: Ray's core requirements (read from its wheel), the project's dependencies that
  are not in the image, and pytest for the core's tests.
- ``requirements.txt``: what ``install_bundle.py`` asks pip for there (offline): the project's
  dependencies with the specifiers of ``pyproject.toml`` (the image's packages included, so pip
  checks that they are there and recent enough), ``ray==<version>`` instead of
  ``ray[default]``, and pytest.

Usage (here, from the repository root)::

    .venv/bin/python benchmarks/gpu/build_bundle.py        # prints the bundle's size
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLE_DIR = REPO / ".offline"
# The device's interpreter and platform (KINDS.md of the device tool: Python 3.12 on x86-64).
PYTHON_VERSION = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# Distributions of the device image (with CUDA there): never bundled, only checked by pip.
IMAGE_PACKAGES = frozenset(
    {"jax", "jaxlib", "numpy", "scipy", "optax", "scikit-learn", "safetensors"}
)
# Project dependencies the device run does not use: no dataset is prepared there (no network),
# so its tasks are nqm and synthetic data; nothing is plotted.
NOT_NEEDED = frozenset({"tensorflow-datasets", "array-record", "importlib-resources", "matplotlib"})
# For the core's tests (``pytest`` section of measure.py); the image has them, pip checks.
TEST_REQUIREMENTS = ("pytest>=8", "pytest-timeout>=2.3")
# Top-level folders of the ``ray`` package that a local Ray instance running the service never
# imports, and file suffixes it never reads (the dashboard's JavaScript source maps).
RAY_PRUNED_DIRS = ("jars", "rllib", "data", "serve", "train", "tune", "llm")
RAY_PRUNED_SUFFIXES = (".map",)
# The device tool carries at most 64 MiB with the working tree; the bundle must leave room.
MAX_BUNDLE_BYTES = 56 * 2**20


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))


def pinned_versions(constraints: Path) -> dict[str, str]:
    """{normalized name: version} of the ``name==version`` lines of ``constraints``."""
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def project_requirements(pyproject: Path, ray_version: str) -> list[str]:
    """The project's dependencies as the device needs them (see the module docstring)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        name = requirement_name(dep)
        if name in NOT_NEEDED:
            continue
        out.append(f"ray=={ray_version}" if name == "ray" else dep.split(";")[0].strip())
    return out + list(TEST_REQUIREMENTS)


def ray_core_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of Ray's wheel that no extra and no marker guards."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    return [
        line.split(":", 1)[1].strip()
        for line in lines
        if line.startswith("Requires-Dist:") and ";" not in line
    ]


def pip_download(requirements: list[str], dest: Path, constraints: Path, deps: bool) -> None:
    """Binary wheels of ``requirements`` for the device's Python and platform into ``dest``."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
    command += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += ["-c", str(constraints), "-d", str(dest)]
    if not deps:
        command.append("--no-deps")
    subprocess.run(command + requirements, check=True)


def pruned(name: str) -> bool:
    parts = name.split("/")
    if parts[0] == "ray" and len(parts) > 2 and parts[1] in RAY_PRUNED_DIRS:
        return True
    return name.endswith(RAY_PRUNED_SUFFIXES)


def prune_ray(wheel: Path, out: Path) -> tuple[int, int]:
    """Write the kept files of ``wheel`` (file modes kept, ``RECORD`` without the pruned
    entries) as a tar.xz at ``out``; returns (files kept, files pruned)."""
    kept = dropped = 0
    partial = out.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as archive, tarfile.open(partial, "w:xz") as tar:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if pruned(info.filename):
                dropped += 1
                continue
            data = archive.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(x for x in lines if not pruned(x.split(",", 1)[0])).encode()
            member = tarfile.TarInfo(info.filename)
            member.size = len(data)
            member.mode = (info.external_attr >> 16) & 0o7777 or 0o644
            tar.addfile(member, io.BytesIO(data))
            kept += 1
    partial.replace(out)
    return kept, dropped


def build(bundle: Path) -> None:
    constraints, pyproject = REPO / "constraints.txt", REPO / "pyproject.toml"
    ray_version = pinned_versions(constraints)["ray"]
    if bundle.exists():
        shutil.rmtree(bundle)
    wheels = bundle / "wheels"
    wheels.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="star-ray-wheel-") as tmp:
        pip_download([f"ray=={ray_version}"], Path(tmp), constraints, deps=False)
        wheel = next(Path(tmp).glob("ray-*.whl"))
        kept, dropped = prune_ray(wheel, bundle / f"{wheel.stem}.pruned.tar.xz")
        print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB, kept {kept} files, "
              f"pruned {dropped}")  # fmt: skip
        ray_deps = ray_core_requirements(wheel)
    requirements = project_requirements(pyproject, ray_version)
    bundled = [r for r in requirements if requirement_name(r) not in IMAGE_PACKAGES | {"ray"}]
    pip_download(ray_deps + bundled, wheels, constraints, deps=True)
    (bundle / "requirements.txt").write_text(
        "# Written by benchmarks/gpu/build_bundle.py; installed offline by install_bundle.py.\n"
        + "".join(f"{r}\n" for r in requirements)
    )
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    for path in files:
        print(f"{path.stat().st_size / 2**20:7.2f} MiB  {path.relative_to(REPO)}")
    print(f"bundle: {total / 2**20:.1f} MiB in {len(files)} files at {bundle.relative_to(REPO)}/")
    if total > MAX_BUNDLE_BYTES:
        raise SystemExit(f"the bundle is over {MAX_BUNDLE_BYTES / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLE_DIR, help="bundle folder (replaced)")
    build(parser.parse_args(argv).out.resolve())


if __name__ == "__main__":
    main()
