"""Install the offline bundle of ``build_bundle.py`` on a machine with no network.

Run with the machine's own Python (on the GPU machine: the image's ``python3``, which has JAX
with CUDA). It creates a virtual environment layered on that interpreter's packages and pip
installs, offline, only what is missing there:

1. ``python -m venv --without-pip VENV`` (no ensurepip needed), then a ``.pth`` file in it that
   puts this interpreter's own site-packages folders after the venv's (``--system-site-packages``
   would not do: when this interpreter is itself a venv, as the image's is, that flag reaches
   the base interpreter's folders, not the image's packages);
2. Ray's pruned wheel rebuilt from ``ray-*.pruned.tar.xz`` (stored, not compressed: it is
   unpacked once);
3. ``VENV/bin/python -m pip install --no-index --find-links ...`` of the bundle's
   ``requirements.txt``: pip sees the image's packages as installed and adds only what is
   missing or too old, into the venv (never touching the image). pip's configuration files are
   ignored (``PIP_CONFIG_FILE=/dev/null``), so no index or constraint of this machine applies.

Usage::

    python3 benchmarks/gpu/install_bundle.py --bundle .offline --venv /tmp/star-gpu-venv

It prints the versions that the venv then imports; a missing package fails the install with
pip's own message.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

# Written into the venv's site-packages: this interpreter's package folders (one per line).
IMAGE_PTH = "_star_image_packages.pth"
# Printed after the install: the modules the device run imports, and where each came from.
CHECK_MODULES = ("jax", "jaxlib", "optax", "ray", "grpc", "google.protobuf", "croniter", "pytest")


def image_site_dirs() -> list[str]:
    """This interpreter's package folders, in its own order."""
    dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return [p for p in dict.fromkeys(dirs) if os.path.isdir(p)]


def make_venv(venv: Path) -> Path:
    """The layered venv at ``venv``; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, IMAGE_PTH).write_text("".join(f"{d}\n" for d in image_site_dirs()))
    return python


def rebuild_wheel(archive: Path, dest: Path) -> Path:
    """The wheel whose files ``archive`` holds (``NAME.pruned.tar.xz`` -> ``dest/NAME.whl``),
    file modes kept (the Ray binaries are executables)."""
    wheel = dest / archive.name.replace(".pruned.tar.xz", ".whl")
    with tarfile.open(archive, "r:xz") as tar, zipfile.ZipFile(wheel, "w") as out:
        for member in tar:
            if not member.isfile():
                continue
            info = zipfile.ZipInfo(member.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | member.mode) << 16
            out.writestr(info, tar.extractfile(member).read())
    return wheel


def install(bundle: Path, venv: Path) -> None:
    start = time.perf_counter()
    python = make_venv(venv)
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    with tempfile.TemporaryDirectory(prefix="star-ray-wheel-") as tmp:
        for archive in sorted(bundle.glob("*.pruned.tar.xz")):
            rebuild_wheel(archive, Path(tmp))
        command = [str(python), "-m", "pip", "install", "--quiet", "--no-index"]
        command += ["--find-links", str(bundle / "wheels"), "--find-links", tmp]
        command += ["-r", str(bundle / "requirements.txt")]
        subprocess.run(command, check=True, env=env)
    check = (
        "import importlib, sys\n"
        f"for name in {CHECK_MODULES!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    where = 'venv' if m.__file__.startswith(sys.prefix) else 'image'\n"
        '    print(f\'  {name} {getattr(m, "__version__", "")} ({where})\')\n'
    )
    subprocess.run([str(python), "-c", check], check=True)
    print(f"installed into {venv} in {time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the folder build_bundle made")
    parser.add_argument("--venv", type=Path, required=True, help="the venv to create (new)")
    args = parser.parse_args(argv)
    if args.venv.exists():
        raise SystemExit(f"{args.venv} exists already; give a new folder")
    print(f"installing {args.bundle} on {sys.executable} ({sysconfig.get_python_version()})")
    install(args.bundle.resolve(), args.venv.resolve())


if __name__ == "__main__":
    main()
