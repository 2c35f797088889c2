"""Twenty clients at once against the real gRPC server, job manager and SQLite store.

What is under test is the API, the manager and the store under concurrent clients: every
client submits a job and watches it to its end. The jobs' runners are stand-ins (the service's
``runner_factory``): each reports its outer steps and writes a checkpoint through the real
store, as a training runner does, in a fraction of a second and without Ray. Training on Ray
is tested end to end in test_service_jobs.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading

import pytest

from services.app import BackgroundService, ServiceOptions
from services.client import StarClient
from services.cluster.lifecycle import Outcome, StopReason
from services.domain import JobState
from services.generated.star.v1 import job_pb2
from tests.services.service_fixtures import events, tiny_spec

CLIENTS = 20
# Outer steps each stand-in job reports.
STEPS = 4
# Seconds the whole test may take (it takes a few on 2 cores).
TIMEOUT_S = 120.0


class QuickRunner:
    """Reports STEPS outer steps and one checkpoint through the real store, then succeeds."""

    def __init__(self, service: BackgroundService, job):
        self.service, self.job_id = service, job.job_id
        self.stopped: StopReason | None = None

    async def execute(self) -> Outcome:
        store = self.service.service.store
        files = self.service.service.manager.checkpoints
        for step in range(1, STEPS + 1):
            await asyncio.sleep(0.01)
            await asyncio.to_thread(store.update_progress, self.job_id, step, {"meta_loss": 1.0})
        data = hashlib.sha256(self.job_id.encode()).digest() * 64
        stored = await asyncio.to_thread(files.write, self.job_id, STEPS, data)
        await asyncio.to_thread(store.add_checkpoint, self.job_id, STEPS, *stored)
        return Outcome(JobState.SUCCEEDED, "finished")

    async def stop(self, reason: StopReason) -> None:
        self.stopped = reason


@pytest.fixture(scope="module")
def quick_service(tmp_path_factory):
    holder: dict = {}
    options = ServiceOptions(
        data_dir=tmp_path_factory.mktemp("star-data"),
        port=0,
        max_running=4,
        connect_ray=False,
        runner_factory=lambda job: QuickRunner(holder["service"], job),
    )
    service = holder["service"] = BackgroundService(options)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def test_twenty_concurrent_clients_submit_and_watch(quick_service):
    results: dict[int, list] = {}

    def one(index: int) -> None:
        with StarClient(quick_service.address) as client:
            spec = tiny_spec(num_workers=1, outer_steps=STEPS, seed=index)
            job = client.submit(spec, request_id=f"concurrent-{index}")
            results[index] = events(client, job.job_id, timeout=TIMEOUT_S)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert sorted(results) == list(range(CLIENTS))
    for seen in results.values():
        assert seen[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        steps = [e.metrics.step for e in seen if e.WhichOneof("event") == "metrics"]
        assert steps == list(range(1, STEPS + 1))
        written = [e for e in seen if e.WhichOneof("event") == "checkpoint_written"]
        assert [e.checkpoint_written.checkpoint.step for e in written] == [STEPS]
    job_ids = {seen[0].job.job_id for seen in results.values()}
    assert len(job_ids) == CLIENTS
