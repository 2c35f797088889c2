"""One `star serve` per data directory and per port, with real `star serve` processes.

The first service runs in a session of its own (its own local Ray instance); a second one on
its data directory, and a third on its port, must exit with 2 and one line before they start
anything, while the first keeps serving. SIGKILL of the first service's process alone (its Ray
processes still running) frees the directory at once: the kernel holds the lock, not a file.
The first service's start also sweeps the leftovers of a killed checkpoint write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.exclusive import DataDirectoryInUse, DataDirectoryLock
from tests.cluster.local_cluster import free_port, kill_session

pytestmark = [pytest.mark.slow, pytest.mark.processes]  # star serve processes

STARTUP_TIMEOUT_S = 180.0
# Seconds a refused `star serve` may take (it imports the CLI, then stops before Ray).
REFUSED_TIMEOUT_S = 60.0


def _command(data_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "services.cli.main",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--num-cpus",
        "1",
        "--dashboard-port",
        str(free_port()),
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), timeout=2)
                .status
            )
        except grpc.RpcError:
            return False
    return status == health_pb2.HealthCheckResponse.SERVING


def _wait_serving(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the first star serve exited"
        if _serving(port):
            return
        time.sleep(0.5)
    raise AssertionError("star serve did not start serving")


def _refused(data_dir: Path, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(data_dir, port),
        capture_output=True,
        text=True,
        timeout=REFUSED_TIMEOUT_S,
        env=_env(),
        start_new_session=True,
    )


def test_one_service_per_data_directory_and_per_port(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    leftovers = data_dir / "checkpoints" / "job-killed"
    leftovers.mkdir(parents=True)
    (leftovers / ".step_000000004-0a1b2c3d.safetensors.x1y2z3.tmp").write_bytes(b"cut")
    (leftovers / "step_000000004-0a1b2c3d.safetensors").write_bytes(b"whole, never indexed")
    log = open(tmp_path / "first.log", "wb")  # noqa: SIM115 (closed in finally)
    first = subprocess.Popen(
        _command(data_dir, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=_env(),
    )
    try:
        _wait_serving(first, port)
        assert not leftovers.exists()  # swept at start
        assert (data_dir / "star.lock").read_text() == f"{first.pid}\n"

        second = _refused(data_dir, free_port())
        assert second.returncode == 2, second.stderr
        assert second.stderr.splitlines() == [
            f"star: error: data directory {data_dir.resolve()} is in use by another star serve"
            f" (pid {first.pid}); stop it or give another --data-dir"
        ]

        other = tmp_path / "other"
        third = _refused(other, port)
        assert third.returncode == 2, third.stderr
        assert third.stderr.splitlines() == [
            f"star: error: cannot listen on 127.0.0.1:{port}: the port is in use"
            " (another star serve?)"
        ]
        assert not (other / "ray").exists()  # refused before it started Ray
        DataDirectoryLock(other).acquire().release()  # and its lock went with it

        assert _serving(port) and first.poll() is None  # the first serves on
        with pytest.raises(DataDirectoryInUse):
            DataDirectoryLock(data_dir).acquire()

        os.kill(first.pid, signal.SIGKILL)  # the service alone: its Ray processes live on
        first.wait(timeout=30)
        DataDirectoryLock(data_dir).acquire().release()
    finally:
        left = kill_session(first)
        log.close()
    assert left == []
