"""Helpers of the service tests: a tiny job spec, following a job's events.

The service itself (``services.app.BackgroundService``: Ray once per test session, SQLite, gRPC
on loopback) is a fixture in ``conftest.py``; the tests talk to it through
``services.client.StarClient``, as any user would.
"""

from __future__ import annotations

from services.client import StarClient
from services.generated.star.v1 import job_pb2

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


def events(
    client: StarClient, job_id: str, after_seq: int = 0, timeout: float = JOB_TIMEOUT_S
) -> list[job_pb2.JobEvent]:
    """The job's events after ``after_seq`` up to its terminal event."""
    return list(client.watch(job_id, after_seq=after_seq, timeout=timeout))


def wait_for_step(
    client: StarClient, job_id: str, step: int, timeout: float = JOB_TIMEOUT_S
) -> int:
    """Follow the job's events until it reports ``step``; returns the last seq seen."""
    for event in client.watch(job_id, timeout=timeout):
        if event.WhichOneof("event") == "metrics" and event.metrics.step >= step:
            return event.seq
    raise AssertionError(f"job {job_id} ended before it reached step {step}")
