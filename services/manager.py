"""The job manager: admits jobs, runs them on the cluster, cancels them, recovers after a restart.

The servicer stays stateless over the store and calls the manager for what changes jobs. The
manager owns the runners of the jobs that run in this service process:

- ``submit`` creates a PENDING job in the store (idempotent on ``request_id``; at most
  ``max_jobs`` active jobs, else ResourceExhausted) and wakes the dispatcher;
- the dispatcher starts PENDING jobs, oldest first, while fewer than ``max_running`` run (the
  others wait in PENDING; Ray would also queue their actors, but a waiting job should hold no
  actor);
- ``cancel``: PENDING -> CANCELLED at once; RUNNING -> CANCELLING, then the runner's learner
  checkpoints and the job becomes CANCELLED; a finished job is left as it is (a no-op);
- ``recover`` (at start): SQLite is the source of truth. Every job the store says is RUNNING
  was interrupted (the service died): it goes back to PENDING (its step rewound to its latest
  checkpoint) and is resumed from that checkpoint; a CANCELLING job becomes CANCELLED (its
  latest checkpoint stands). Leftover actors of those jobs are removed by the runner before
  it starts a new learner;
- ``shutdown`` asks every runner to checkpoint and stop; their jobs go back to PENDING and
  resume when the service starts again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.cluster.evaluation import EvaluationRunner
from services.cluster.lifecycle import Outcome, Runner, StopReason, end_job, run_job
from services.cluster.runner import TrainingRunner
from services.domain import EvaluationJobSpec, Job, JobKind, JobState, TrainingSpec

logger = logging.getLogger(__name__)

# Default bound of active (pending, running, cancelling) jobs.
DEFAULT_MAX_JOBS = 100
# Default number of jobs running at once (the others wait in PENDING).
DEFAULT_MAX_RUNNING = 4
# Seconds shutdown waits for the runners to checkpoint and stop.
SHUTDOWN_TIMEOUT_S = 120.0


class JobManager:
    """See the module docstring. A job's stored spec (``Job.spec_json``) is read back with
    ``TrainingSpec.from_json`` / ``EvaluationJobSpec.from_json`` when it starts.

    ``runner_factory(job)`` makes the runner of a job (default: :meth:`make_runner`, a
    ``TrainingRunner`` or ``EvaluationRunner``; tests give stand-ins); ``worker_class`` is the
    training workers' actor class (None: ``WorkerActor``; benchmarks give a stand-in estimator).
    """

    def __init__(
        self,
        store: Any,
        checkpoints: Any,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_running: int = DEFAULT_MAX_RUNNING,
        runner_factory: Callable[[Job], Runner] | None = None,
        worker_class: type | None = None,
    ):
        self.store = store
        self.checkpoints = checkpoints
        self.max_jobs = max_jobs
        self.max_running = max_running
        self.runner_factory = runner_factory or self.make_runner
        self.worker_class = worker_class
        self.runners: dict[str, Any] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover interrupted jobs, then start dispatching."""
        await self.recover()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="star-dispatcher")
        self.wake()

    async def recover(self) -> None:
        """Requeue the jobs a dead service left RUNNING (from their latest checkpoint); the
        CANCELLING ones end CANCELLED (their latest checkpoint stands)."""
        restarted = Outcome(JobState.PENDING, "the service restarted")
        for job in await asyncio.to_thread(self._all_jobs, [JobState.RUNNING, JobState.CANCELLING]):
            await end_job(self.store, job.job_id, restarted)

    def _all_jobs(self, states: list[JobState]) -> list[Job]:
        jobs, token = [], None
        while token != "":
            page, token = self.store.list_jobs(states, page_size=1000, page_token=token or "")
            jobs.extend(page)
        return jobs

    async def shutdown(self) -> None:
        """Checkpoint and stop every running job (they resume on the next start)."""
        self._closing = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        await asyncio.gather(*(r.stop(StopReason.SHUTDOWN) for r in self.runners.values()))
        if self.tasks:
            done, pending = await asyncio.wait(self.tasks.values(), timeout=SHUTDOWN_TIMEOUT_S)
            for task in pending:
                task.cancel()

    # -- requests ------------------------------------------------------------------------------

    async def submit(
        self,
        spec_json: str,
        *,
        kind: JobKind = JobKind.TRAINING,
        request_id: str = "",
        schedule_id: str = "",
        fire_time: datetime | None = None,
    ) -> Job:
        """Create a PENDING job (see the module docstring); the same request_id returns the
        same job."""
        job, created = await asyncio.to_thread(
            self.store.create_job,
            spec_json,
            kind=kind,
            request_id=request_id,
            schedule_id=schedule_id,
            fire_time=fire_time,
            max_active=self.max_jobs,
        )
        if created:
            self.wake()
        return job

    async def submit_spec_json(
        self,
        spec_json: str,
        *,
        request_id: str = "",
        schedule_id: str = "",
        fire_time: datetime | None = None,
    ) -> Job:
        """A training job (the interface the scheduler uses)."""
        return await self.submit(
            spec_json, request_id=request_id, schedule_id=schedule_id, fire_time=fire_time
        )

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job; a finished job is returned unchanged."""
        job, changed = await asyncio.to_thread(self.store.request_cancel, job_id)
        runner = self.runners.get(job_id)
        if changed and runner is not None:
            await runner.stop(StopReason.CANCEL)
        return job

    def wake(self) -> None:
        """Tell the dispatcher that a job may be ready to start."""
        self._wake.set()

    # -- dispatching ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._start_pending()
            except Exception:  # keep dispatching; the next wake retries
                logger.exception("dispatcher")

    async def _start_pending(self) -> None:
        free = self.max_running - len(self.runners)
        if free <= 0:
            return
        pending = await asyncio.to_thread(self._all_jobs, [JobState.PENDING])
        # A launched job stays PENDING until its runner has moved it to RUNNING: not a candidate.
        # Oldest first: the store lists newest first, in the order of insertion.
        waiting = [job for job in reversed(pending) if job.job_id not in self.runners]
        for job in waiting[:free]:
            await self._launch(job)

    def make_runner(self, job: Job) -> Runner:
        """The runner of a stored job (ValueError / ConfigError for a spec that does not parse)."""
        if job.kind is JobKind.TRAINING:
            training = TrainingSpec.from_json(job.spec_json)
            return TrainingRunner(
                self.store, self.checkpoints, job.job_id, training, self.worker_class
            )
        evaluation = EvaluationJobSpec.from_json(job.spec_json)
        return EvaluationRunner(self.store, self.checkpoints, job.job_id, evaluation)

    async def _launch(self, job: Job) -> None:
        try:
            runner = self.runner_factory(job)
        except Exception as err:  # a stored spec that no longer parses
            logger.exception("job %s: bad stored spec", job.job_id)
            await asyncio.to_thread(
                self.store.transition, job.job_id, JobState.FAILED, f"invalid stored spec: {err}"
            )
            return
        self.runners[job.job_id] = runner
        task = asyncio.create_task(self._run(job.job_id, runner), name=f"star-{job.job_id}")
        self.tasks[job.job_id] = task

    async def _run(self, job_id: str, runner: Runner) -> None:
        try:
            state = await run_job(self.store, job_id, runner)
            logger.info("job %s ended %s", job_id, state.value)
        except Exception:  # the store failed: the job is requeued when the service restarts
            logger.exception("job %s: could not record its end", job_id)
        finally:
            self.runners.pop(job_id, None)
            self.tasks.pop(job_id, None)
            if not self._closing:
                self.wake()
