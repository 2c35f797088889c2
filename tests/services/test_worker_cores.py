"""CPU workers own their cores, on the session's real Ray (2 CPUs) through the real service.

A 2-worker CPU job: each worker's placement report names its cores and pid; ``/proc`` shows
the two workers' sets are disjoint, every thread of a worker (XLA's included) is within its
set, and XLA sized its thread pool by that set (JAX started after the pinning). With a core
held by another process, a worker runs unpinned and the job log says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.cluster import cores
from services.cluster.learner import worker_name
from services.cluster.placement import worker_options
from services.domain.spec import DistributedConfig
from services.generated.star.v1 import job_pb2
from tests.services.core_holder import Holder, cpus_allowed
from tests.services.service_fixtures import JOB_TIMEOUT_S, tiny_spec

# Name of the threads of XLA's CPU thread pool (one per core it may use when it starts).
XLA_POOL_THREAD = "tf_XLAEigen"

pytestmark = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores this process may run on"
)


@pytest.fixture
def claim_dir(monkeypatch, tmp_path):
    """A claim directory of this test's own (the service hands it to its CPU workers), apart
    from the claims of other programs on the machine."""
    directory = tmp_path / "claims"
    monkeypatch.setenv(cores.CLAIM_DIR_ENV, str(directory))
    return directory


def test_a_worker_asks_ray_for_cpus_per_worker():
    options, device = worker_options(DistributedConfig(cpus_per_worker=3), gpus=0.0)
    assert options["num_cpus"] == 3 and device == "cpu"
    assert options["runtime_env"]["env_vars"]["JAX_PLATFORMS"] == "cpu"


def run_until_step(client, job_id: str, step: int) -> list[job_pb2.LogMessage]:
    """The job's log messages until it reports ``step`` (its workers are then computing)."""
    logs = []
    for event in client.watch(job_id, timeout=JOB_TIMEOUT_S):
        kind = event.WhichOneof("event")
        if kind == "log":
            logs.append(event.log)
        if kind == "metrics" and event.metrics.step >= step:
            return logs
    raise AssertionError(f"job {job_id} ended before step {step}")


def cancel(client, job_id: str) -> None:
    client.cancel(job_id)
    list(client.watch(job_id, timeout=JOB_TIMEOUT_S))


def placements(ray, job_id: str, count: int) -> list[dict]:
    actors = [ray.get_actor(worker_name(job_id, i), namespace="star") for i in range(count)]
    return ray.get([actor.placement.remote() for actor in actors])


def thread_names_and_cores(pid: int) -> list[tuple[str, set[int]]]:
    tasks = Path(f"/proc/{pid}/task")
    return [
        ((task / "comm").read_text().strip(), cpus_allowed(task / "status"))
        for task in tasks.iterdir()
    ]


def test_two_cpu_workers_hold_disjoint_cores_and_xla_follows(ray_session, client, claim_dir):
    spec = tiny_spec(outer_steps=100_000, checkpoint_interval=100_000, gpus_per_worker=0.0)
    job = client.submit(spec)
    try:
        logs = run_until_step(client, job.job_id, 2)
        found = placements(ray_session, job.job_id, 2)
        held = [set(p["cores"]) for p in found]
        assert all(len(s) == 1 for s in held) and not held[0] & held[1]
        for placement, cores_held in zip(found, held, strict=True):
            assert placement["pin_note"] == ""
            assert cpus_allowed(Path(f"/proc/{placement['pid']}/status")) == cores_held
            threads = thread_names_and_cores(placement["pid"])
            assert all(allowed == cores_held for _, allowed in threads), threads
            pool = [name for name, _ in threads if name == XLA_POOL_THREAD]
            assert len(pool) == len(cores_held), threads  # sized by the claim: JAX came after
        info = [m.message for m in logs if m.message.startswith("workers:")]
        assert info and all(f"cores {p['cores'][0]}" in info[0] for p in found)
        assert not [m for m in logs if m.level == job_pb2.LOG_LEVEL_WARNING]
    finally:
        cancel(client, job.job_id)


def test_a_worker_without_a_free_core_runs_unpinned_and_the_log_says_so(
    ray_session, client, claim_dir
):
    taken = Holder(claim_dir, 1, sorted(os.sched_getaffinity(0)))
    spec = tiny_spec(outer_steps=100_000, checkpoint_interval=100_000, gpus_per_worker=0.0)
    job = client.submit(spec)
    try:
        logs = run_until_step(client, job.job_id, 1)
        found = placements(ray_session, job.job_id, 2)
        pinned = [p for p in found if p["cores"]]
        unpinned = [p for p in found if not p["cores"]]
        assert len(pinned) == len(unpinned) == 1
        assert not set(pinned[0]["cores"]) & set(taken.cores)
        warnings = [m.message for m in logs if m.level == job_pb2.LOG_LEVEL_WARNING]
        assert warnings == [
            f"worker {unpinned[0]['worker']} runs unpinned: {unpinned[0]['pin_note']}"
        ]
        assert "are free" in warnings[0]
    finally:
        cancel(client, job.job_id)
        taken.stop()
