"""Importing the core, and loading a learned optimizer from a checkpoint, stays light.

Workers and the gRPC server import ``star_core``; tensorflow-datasets (and the protobuf runtime
it pulls in) is imported only by the functions that read or build datasets. Checked in a fresh
interpreter, since this test session has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.processes  # each test imports in a fresh interpreter

# Modules that importing the core or loading an optimizer must not import.
FORBIDDEN = ("tensorflow_datasets", "google.protobuf", "tensorflow", "ray", "grpc")

SCRIPT = """
import json, sys
import jax, jax.numpy as jnp
import star_core, star_core.optimizers, star_core.training
from star_core.training import save_checkpoint

lopt = star_core.optimizers.get("star")
save_checkpoint(sys.argv[1], lopt.init_meta_params(jax.random.key(0)), None,
                {"optimizer": "star", "optimizer_config": {}, "step": 0})
tx = star_core.load_optimizer(sys.argv[1])
params = {"w": jnp.ones((3, 2))}
updates, _ = tx.update({"w": jnp.full((3, 2), 0.5)}, tx.init(params), params)
print(json.dumps({"finite": bool(jnp.all(jnp.isfinite(updates["w"]))),
                  "loaded": {name: name in sys.modules for name in sys.argv[2:]}}))
"""


def test_core_and_load_optimizer_do_not_import_tfds_or_protobuf(tmp_path):
    path = tmp_path / "step_000000.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), *FORBIDDEN],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["finite"]
    assert report["loaded"] == {name: False for name in FORBIDDEN}


def test_reading_a_dataset_still_imports_tfds_on_first_use(tmp_path):
    script = (
        "import sys\n"
        "from star_core.tasks.data import digits\n"
        "before = 'tensorflow_datasets' in sys.modules\n"
        "arrays = digits.load_digits_arrays('test', sys.argv[1])\n"
        "print(before, 'tensorflow_datasets' in sys.modules, arrays['image'].shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.split("\n")[-2] == "False True (360, 8, 8, 1)"
