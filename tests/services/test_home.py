"""The tests' Ray instance and service write nothing into the home (tests/conftest.py gives the
session an empty one and fails the session if anything lands there)."""

from __future__ import annotations

import os
from pathlib import Path

from services.cluster import runtime


def test_the_session_ray_authenticates_with_its_own_token_not_one_in_the_home(
    ray_session, running_service
):
    assert ray_session.is_initialized() and running_service.address
    token_path = Path(os.environ[runtime.AUTH_TOKEN_PATH_ENV])
    assert os.environ[runtime.AUTH_MODE_ENV] == "token" and token_path.is_file()
    assert not token_path.is_relative_to(Path.home())
    assert not (Path.home() / ".ray").exists()
    assert not list(Path.home().iterdir())  # nothing else either
