"""What the service's local Ray instance inherits: JAX's compilation cache under the data
directory, unless the user configured one."""

from __future__ import annotations

from pathlib import Path

import jax

from services.cluster import runtime


def test_a_local_instance_caches_every_compilation_under_the_data_dir(tmp_path):
    env = runtime.compilation_cache_env(tmp_path, {})
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jax-cache")
    assert float(env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]) == 0
    assert int(env["JAX_COMPILATION_CACHE_MAX_SIZE"]) == runtime.COMPILATION_CACHE_MAX_BYTES > 0
    # Names JAX reads: each is one of its config options, upper-cased.
    for name in env:
        assert name.lower() in jax.config.values, name


def test_the_users_cache_settings_are_kept(tmp_path):
    mine = {"JAX_COMPILATION_CACHE_DIR": "/srv/cache", "JAX_COMPILATION_CACHE_MAX_SIZE": "-1"}
    env = runtime.compilation_cache_env(Path(tmp_path), mine)
    assert set(env) == {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"}
