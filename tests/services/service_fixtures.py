"""Helpers of the service tests: a tiny job spec, a client, following a job's events.

The service itself (``services.app.BackgroundService``: Ray once per test session, SQLite, gRPC
on loopback) is a fixture in ``conftest.py``; the tests use the ordinary synchronous gRPC
client against it, as any user would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from services.generated.star.v1 import job_pb2, service_pb2, service_pb2_grpc

# Seconds a test waits for a job to end (Ray actor start-up and JIT compile included).
JOB_TIMEOUT_S = 240.0


def tiny_spec(**fields) -> job_pb2.JobSpec:
    """A quick STAR job on the noisy quadratic (PES, truncation 3, horizon 9, 2 pairs)."""
    spec = job_pb2.JobSpec(
        tasks=["nqm"], outer_steps=6, num_workers=2, checkpoint_interval=3, seed=0
    )
    spec.estimator.kind = "pes"
    spec.estimator.truncation_length = 3
    spec.estimator.horizon = 9
    spec.estimator.num_pairs = 2
    for name, value in fields.items():
        setattr(spec, name, value)
    return spec


def stub(address: str, token: str | None = None) -> tuple[grpc.Channel, object]:
    channel = grpc.insecure_channel(address)
    return channel, service_pb2_grpc.MetaTrainingStub(channel)


def watch(
    stub_, job_id: str, after_seq: int = 0, timeout: float = JOB_TIMEOUT_S
) -> Iterator[job_pb2.JobEvent]:
    """The job's events until its terminal event (the stream ends there)."""
    request = service_pb2.WatchJobRequest(job_id=job_id, after_seq=after_seq)
    yield from stub_.WatchJob(request, timeout=timeout)


def wait_for_step(stub_, job_id: str, step: int, timeout: float = JOB_TIMEOUT_S) -> int:
    """Follow the job's events until it reports ``step``; returns the last seq seen."""
    deadline = time.monotonic() + timeout
    for event in watch(stub_, job_id, timeout=timeout):
        if event.WhichOneof("event") == "metrics" and event.metrics.step >= step:
            return event.seq
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"job {job_id} did not reach step {step}")
