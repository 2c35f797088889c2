"""``star serve --ray-address`` as a process of its own, and the gRPC calls the tests make to it."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.generated.star.v1 import job_pb2, service_pb2, service_pb2_grpc
from tests.cluster.local_cluster import BIN, LocalRayCluster, free_port, kill_session

# Seconds for `star serve` to join the cluster and answer health checks.
SERVE_START_TIMEOUT_S = 120.0
# Seconds a clean stop (SIGTERM: running jobs checkpoint) may take before SIGKILL.
SERVE_STOP_TIMEOUT_S = 60.0
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


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
        self.channel: grpc.Channel | None = None

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
        self.channel = grpc.insecure_channel(self.address)
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        request = health_pb2.HealthCheckRequest(service="star.v1.MetaTraining")
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"star serve exited ({self.process.returncode}):\n" + self.log_tail()
                )
            with contextlib.suppress(grpc.RpcError):
                if (
                    health.Check(request, timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            time.sleep(0.5)
        raise AssertionError(
            f"star serve did not serve in {SERVE_START_TIMEOUT_S:.0f} s:\n" + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    @property
    def stub(self) -> service_pb2_grpc.MetaTrainingStub:
        return service_pb2_grpc.MetaTrainingStub(self.channel)

    def kill(self) -> list[str]:
        """SIGKILL the service and its session (a machine that dies); returns leftovers."""
        self._close_channel()
        return kill_session(self.process) if self.process else []

    def stop(self) -> list[str]:
        """SIGTERM (running jobs checkpoint), SIGKILL after SERVE_STOP_TIMEOUT_S."""
        self._close_channel()
        if self.process is None:
            return []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(SERVE_STOP_TIMEOUT_S)
        return kill_session(self.process)

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def submit(stub, spec: job_pb2.JobSpec, request_id: str) -> job_pb2.Job:
    return stub.SubmitJob(
        service_pb2.SubmitJobRequest(spec=spec, request_id=request_id), timeout=30
    )


def watch(
    stub,
    job_id: str,
    timeout: float,
    after_seq: int = 0,
    until: Callable[[job_pb2.JobEvent], bool] | None = None,
) -> Iterator[job_pb2.JobEvent]:
    """The job's events (after ``after_seq``) up to its terminal event, or up to the first for
    which ``until`` is true; fails the test when the stream ends without either."""
    request = service_pb2.WatchJobRequest(job_id=job_id, after_seq=after_seq)
    for event in stub.WatchJob(request, timeout=timeout):
        yield event
        if until is not None and until(event):
            return
        if event.WhichOneof("event") == "state_change" and event.state_change.to_state in TERMINAL:
            return
    raise AssertionError(f"the watch of {job_id} ended without a terminal event")


def fetch_checkpoint(stub, checkpoint_id: str) -> tuple[bytes, str]:
    """The checkpoint file's bytes and the sha256 the server announced for it."""
    data, announced = bytearray(), ""
    request = service_pb2.FetchCheckpointRequest(checkpoint_id=checkpoint_id)
    for chunk in stub.FetchCheckpoint(request, timeout=60):
        assert chunk.offset == len(data)
        data += chunk.data
        announced = chunk.sha256
    return bytes(data), announced


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metrics_steps(events: list[job_pb2.JobEvent]) -> list[int]:
    return [e.metrics.step for e in events if e.WhichOneof("event") == "metrics"]


def logs(events: list[job_pb2.JobEvent]) -> list[str]:
    return [e.log.message for e in events if e.WhichOneof("event") == "log"]
