"""Offline checks of deploy/: container images, KubeRay and `ray up` configs, monitoring."""

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def dev_tool(name: str) -> str | None:
    """Path of a command-line tool that a dev dependency installs next to this Python, if any."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)
