"""``star serve --ray-address`` as a process of its own, with a ``StarClient`` connected to it."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from services.client import StarClient, StarError, is_terminal
from services.generated.star.v1 import job_pb2
from tests.cluster.local_cluster import BIN, LocalRayCluster, free_port, kill_session

# Seconds for `star serve` to join the cluster and answer health checks.
SERVE_START_TIMEOUT_S = 120.0
# Seconds a clean stop (SIGTERM: running jobs checkpoint) may take before SIGKILL.
SERVE_STOP_TIMEOUT_S = 60.0
# Seconds each health check waits for the server to listen.
HEALTH_WAIT_S = 2.0


def tiny_spec(**fields) -> job_pb2.JobSpec:
    """A quick STAR job on the noisy quadratic (PES, truncation 3, horizon 9, 2 pairs)."""
    spec = job_pb2.JobSpec(tasks=["nqm"], seed=0)
    spec.estimator.kind = "pes"
    spec.estimator.truncation_length = 3
    spec.estimator.horizon = 9
    spec.estimator.num_pairs = 2
    for name, value in fields.items():
        if name == "worker_resources":
            spec.worker_resources.update(value)
        else:
            setattr(spec, name, value)
    return spec


class StarServer:
    """One ``star serve`` process joined to ``cluster``; ``stop()`` or ``kill()`` in a finally."""

    def __init__(self, cluster: LocalRayCluster, data_dir: Path, log: Path):
        self.cluster = cluster
        self.data_dir = data_dir
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.client: StarClient | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> StarServer:
        command = [
            str(BIN / "star"),
            "serve",
            "--ray-address",
            self.cluster.address,
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                command,
                env=self.cluster.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.client = StarClient(self.address)
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"star serve exited ({self.process.returncode}):\n" + self.log_tail()
                )
            with contextlib.suppress(StarError):
                if self.client.health(HEALTH_WAIT_S, wait_for_ready=True) == "SERVING":
                    return
        raise AssertionError(
            f"star serve did not serve in {SERVE_START_TIMEOUT_S:.0f} s:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> list[str]:
        """SIGKILL the service and its session (a machine that dies); returns leftovers."""
        self._close_client()
        return kill_session(self.process) if self.process else []

    def stop(self) -> list[str]:
        """SIGTERM (running jobs checkpoint), SIGKILL after SERVE_STOP_TIMEOUT_S."""
        self._close_client()
        if self.process is None:
            return []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(SERVE_STOP_TIMEOUT_S)
        return kill_session(self.process)

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def watch(
    client: StarClient,
    job_id: str,
    timeout: float,
    after_seq: int = 0,
    until: Callable[[job_pb2.JobEvent], bool] | None = None,
) -> Iterator[job_pb2.JobEvent]:
    """The job's events (after ``after_seq``) up to its terminal event, or up to the first for
    which ``until`` is true; fails the test when the watch ends without either."""
    for event in client.watch(job_id, after_seq=after_seq, timeout=timeout):
        yield event
        if (until is not None and until(event)) or is_terminal(event):
            return
    raise AssertionError(f"the watch of {job_id} ended without a terminal event")


def metrics_steps(events: list[job_pb2.JobEvent]) -> list[int]:
    return [e.metrics.step for e in events if e.WhichOneof("event") == "metrics"]


def logs(events: list[job_pb2.JobEvent]) -> list[str]:
    return [e.log.message for e in events if e.WhichOneof("event") == "log"]
