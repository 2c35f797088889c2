"""The job manager and the job lifecycle on a real SQLite store, with stand-in runners.

What is under test is the manager (dispatch, max_running, cancel, recovery, shutdown) and
``services.cluster.lifecycle`` (a job always ends, whatever its runner does). The runners are
its collaborators: stand-ins whose work the test controls (an event it releases), so that
every race can be set up on purpose and repeated. The runners themselves are tested on real
Ray in test_service_jobs.py / test_service_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.cluster.lifecycle import Outcome, StopReason
from services.domain import JobState
from services.manager import JobManager
from services.store import Store

# Seconds a test waits for something the manager should do at once.
PROMPT_S = 5.0


class StandInRunner:
    """Runs until released (or stopped); then returns ``outcome``, or raises ``error``."""

    def __init__(self, job_id: str, log: list):
        self.job_id = job_id
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.outcome = Outcome(JobState.SUCCEEDED, "finished")
        self.error: Exception | None = None
        self.stop_reasons: list[StopReason] = []
        self._log = log

    async def execute(self) -> Outcome:
        self.started.set()
        self._log.append(("start", self.job_id))
        await self.release.wait()
        if self.error is not None:
            raise self.error
        if self.stop_reasons:
            reason = self.stop_reasons[-1]
            state = JobState.CANCELLED if reason is StopReason.CANCEL else JobState.PENDING
            return Outcome(state, "stopped")
        return self.outcome

    async def stop(self, reason: StopReason) -> None:
        self.stop_reasons.append(reason)
        self.release.set()


class Harness:
    """A JobManager over a real store whose runners are StandInRunners (``runners[job_id]``)."""

    def __init__(self, store: Store, max_running: int):
        self.store = store
        self.runners: dict[str, StandInRunner] = {}
        self.log: list = []
        self.manager = JobManager(
            store,
            None,
            max_running=max_running,
            runner_factory=self._make,
        )

    def _make(self, job) -> StandInRunner:
        runner = StandInRunner(job.job_id, self.log)
        self.runners[job.job_id] = runner
        return runner

    async def submit(self) -> str:
        return (await self.manager.submit("{}")).job_id

    async def state(self, job_id: str) -> JobState:
        return (await asyncio.to_thread(self.store.get_job, job_id)).state

    async def until(self, job_id: str, state: JobState) -> None:
        async with asyncio.timeout(PROMPT_S):
            while await self.state(job_id) is not state:
                await asyncio.sleep(0.01)

    async def started(self, job_id: str) -> None:
        async with asyncio.timeout(PROMPT_S):
            while job_id not in self.runners:
                await asyncio.sleep(0.01)
            await self.runners[job_id].started.wait()


def run(store: Store, max_running: int, scenario) -> None:
    async def main():
        harness = Harness(store, max_running)
        await harness.manager.start()
        try:
            await scenario(harness)
        finally:
            for runner in harness.runners.values():
                runner.release.set()
            await harness.manager.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("trial", range(30))
def test_a_job_submitted_while_another_is_starting_takes_the_free_slot(store, trial):
    """Back to back submissions: the second must start beside the first (max_running 2),
    never wait PENDING next to a free slot while the first is still being started."""

    async def scenario(h: Harness):
        first = await h.submit()
        for _ in range(trial % 3):  # vary how far the first job got before the second comes
            await asyncio.sleep(0)
        second = await h.submit()
        await h.started(first)
        await h.started(second)
        assert await h.state(first) is JobState.RUNNING
        assert await h.state(second) is JobState.RUNNING

    run(store, 2, scenario)


def test_the_dispatcher_does_not_count_a_launched_job_as_waiting(store, clock):
    """The race above, set up exactly: job A is launched (its runner exists) but still PENDING
    in the store; a dispatch must give the free slot to B."""

    async def scenario(h: Harness):
        first, _ = await asyncio.to_thread(store.create_job, "{}")
        clock.advance(1)
        second, _ = await asyncio.to_thread(store.create_job, "{}")
        h.manager.runners[first.job_id] = StandInRunner(first.job_id, h.log)  # launched
        await h.manager._start_pending()
        assert second.job_id in h.manager.runners
        await h.started(second.job_id)

    async def main():
        h = Harness(store, 2)  # not started: no dispatcher of its own
        try:
            await scenario(h)
        finally:
            for runner in h.runners.values():
                runner.release.set()
            await h.manager.shutdown()

    asyncio.run(main())


def test_never_more_than_max_running_and_every_job_runs(store):
    async def scenario(h: Harness):
        jobs = [await h.submit() for _ in range(5)]
        await h.started(jobs[0])
        await h.started(jobs[1])
        for index, job_id in enumerate(jobs):
            await h.started(job_id)
            states = [await h.state(j) for j in jobs]
            assert states.count(JobState.RUNNING) == 2 or index >= 3
            assert sum(s is JobState.PENDING for s in states) == max(0, 5 - 2 - index)
            h.runners[job_id].release.set()
            await h.until(job_id, JobState.SUCCEEDED)
        assert [job for _, job in h.log] == jobs  # oldest first

    run(store, 2, scenario)


@pytest.mark.parametrize(
    "error",
    [RuntimeError("the evaluation failed"), KeyError("x"), OSError(28, "No space left")],
    ids=["runtime", "key", "enospc"],
)
def test_whatever_a_runner_raises_its_job_ends_failed_with_the_reason(store, error):
    async def scenario(h: Harness):
        job_id = await h.submit()
        await h.started(job_id)
        h.runners[job_id].error = error
        h.runners[job_id].release.set()
        await h.until(job_id, JobState.FAILED)
        job = await asyncio.to_thread(store.get_job, job_id)
        assert job.error.startswith(type(error).__name__)
        # The slot is free again: the next job runs.
        following = await h.submit()
        await h.started(following)

    run(store, 1, scenario)


def test_a_job_cancelled_after_launch_but_before_it_started_never_runs(store):
    async def scenario(h: Harness):
        blocker = await h.submit()
        await h.started(blocker)
        waiting = await h.submit()  # PENDING behind max_running 1
        await h.manager.cancel(waiting)
        assert await h.state(waiting) is JobState.CANCELLED
        h.runners[blocker].release.set()
        await h.until(blocker, JobState.SUCCEEDED)
        await asyncio.sleep(0.2)
        assert ("start", waiting) not in h.log

    run(store, 1, scenario)


def test_cancel_of_a_running_job_stops_its_runner_and_ends_cancelled(store):
    async def scenario(h: Harness):
        job_id = await h.submit()
        await h.started(job_id)
        job = await h.manager.cancel(job_id)
        assert job.state is JobState.CANCELLING
        await h.until(job_id, JobState.CANCELLED)
        assert h.runners[job_id].stop_reasons == [StopReason.CANCEL]
        again = await h.manager.cancel(job_id)  # a finished job: a no-op
        assert again.state is JobState.CANCELLED

    run(store, 1, scenario)


def test_a_run_that_finishes_while_being_cancelled_ends_succeeded(store):
    async def scenario(h: Harness):
        job_id = await h.submit()
        await h.started(job_id)
        await asyncio.to_thread(store.request_cancel, job_id)  # the runner has not seen it
        h.runners[job_id].release.set()
        await h.until(job_id, JobState.SUCCEEDED)
        job = await asyncio.to_thread(store.get_job, job_id)
        assert job.state is JobState.SUCCEEDED

    run(store, 1, scenario)


def test_shutdown_requeues_running_jobs_at_their_latest_checkpoint(store):
    async def scenario(h: Harness):
        job_id = await h.submit()
        await h.started(job_id)
        await asyncio.to_thread(store.update_progress, job_id, 7, {"meta_loss": 1.0})
        await asyncio.to_thread(store.add_checkpoint, job_id, 5, "j/5.safetensors", 1, "0" * 64)
        await asyncio.to_thread(store.update_progress, job_id, 9, {"meta_loss": 1.0})
        await h.manager.shutdown()
        job = await asyncio.to_thread(store.get_job, job_id)
        assert job.state is JobState.PENDING and job.step == 5
        assert h.runners[job_id].stop_reasons == [StopReason.SHUTDOWN]

    run(store, 1, scenario)


def test_recover_requeues_running_jobs_and_finishes_cancelling_ones(store):
    running, _ = store.create_job("{}")
    cancelling, _ = store.create_job("{}")
    for job in (running, cancelling):
        store.transition(job.job_id, JobState.RUNNING)
        store.update_progress(job.job_id, 12, {})
    store.add_checkpoint(running.job_id, 10, "r/10.safetensors", 1, "0" * 64)
    store.request_cancel(cancelling.job_id)

    async def scenario(h: Harness):
        # The requeued job runs again (a runner starts it) from step 10.
        await h.started(running.job_id)
        job = await asyncio.to_thread(store.get_job, running.job_id)
        assert job.state is JobState.RUNNING and job.step == 10
        assert await h.state(cancelling.job_id) is JobState.CANCELLED

    run(store, 2, scenario)


def test_a_stored_spec_that_no_longer_parses_fails_its_job(store):
    async def scenario(h: Harness):
        def refuse(job):
            raise ValueError("unknown field 'x'")

        h.manager.runner_factory = refuse
        job_id = await h.submit()
        await h.until(job_id, JobState.FAILED)
        job = await asyncio.to_thread(store.get_job, job_id)
        assert "invalid stored spec: unknown field 'x'" in job.error

    run(store, 1, scenario)


def test_a_task_cancelled_by_a_shutdown_timeout_still_requeues_its_job(store):
    """A runner that ignores its stop request: the manager gives up on it, and the job still
    goes back to PENDING rather than staying RUNNING."""

    async def scenario(h: Harness):
        job_id = await h.submit()
        await h.started(job_id)
        runner = h.runners[job_id]
        runner.stop = _ignore  # type: ignore[method-assign]
        task = h.manager.tasks[job_id]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await h.state(job_id) is JobState.PENDING

    run(store, 1, scenario)


async def _ignore(reason: StopReason) -> None:
    return None
