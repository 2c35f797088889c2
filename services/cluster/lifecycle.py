"""A job's lifecycle in the service process: start it, run its runner, end it — in one place.

A runner (:class:`Runner`: the training runner, the evaluation runner, or a stand-in in tests)
only *does* the work and says how it ended (an :class:`Outcome`); :func:`run_job` owns the
job's state:

1. PENDING -> RUNNING (:func:`start_job`); a job that is no longer PENDING (it was cancelled
   meanwhile) is not run;
2. ``runner.execute()``; whatever it raises, the job ends FAILED with the reason (an exception
   never leaves a job RUNNING with no runner);
3. the outcome is stored by :func:`end_job`, which reconciles it with what happened meanwhile:
   a job that is already terminal stays as it is; a job being cancelled that was asked to go
   back to PENDING (the service stopping) becomes CANCELLED; a job that goes back to PENDING
   has its step rewound to its latest checkpoint, where it will resume.

A runner stops on request (:class:`StopReason`): CANCEL (CancelJob: the job checkpoints and
ends CANCELLED) or SHUTDOWN (the service stops: the job checkpoints, goes back to PENDING and
resumes on the next start). :func:`stopped_outcome` is the outcome of a run cut short by one.

:func:`requeue` rewinds a RUNNING job to its latest checkpoint through PENDING, as a restart
does; the training runner uses it when it starts a lost learner again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, NamedTuple, Protocol

from services.domain import FailedPrecondition, JobState

logger = logging.getLogger(__name__)


class StopReason(enum.Enum):
    CANCEL = "cancel"  # CancelJob: the job ends CANCELLED
    SHUTDOWN = "shutdown"  # the service stops: the job goes back to PENDING and resumes later


class Outcome(NamedTuple):
    """How a run ended: the job's next state and why."""

    state: JobState
    reason: str


class Runner(Protocol):
    """What :func:`run_job` drives (``TrainingRunner``, ``EvaluationRunner``)."""

    async def execute(self) -> Outcome:
        """Do the job's work (the job is RUNNING); return how it ended."""

    async def stop(self, reason: StopReason) -> None:
        """Ask the work to stop soon (it checkpoints first); may be called at any time."""


def stopped_outcome(reason: StopReason | None, what: str = "") -> Outcome:
    """The outcome of a run that ``reason`` cut short (None: it stopped on its own)."""
    if reason is StopReason.CANCEL:
        return Outcome(JobState.CANCELLED, "cancelled")
    if reason is StopReason.SHUTDOWN:
        return Outcome(JobState.PENDING, "the service is stopping")
    return Outcome(JobState.FAILED, f"{what or 'the run'} stopped without a request")


def failure_reason(err: BaseException) -> str:
    """The FAILED reason of an exception: its type and its first line (for an error raised in
    a Ray task, that of the task's own exception, which Ray keeps as ``cause``)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


async def start_job(store: Any, job_id: str) -> bool:
    """PENDING -> RUNNING; False when the job is no longer PENDING (cancelled meanwhile)."""
    try:
        await asyncio.to_thread(store.transition, job_id, JobState.RUNNING, "started")
    except FailedPrecondition:
        return False
    return True


async def end_job(store: Any, job_id: str, outcome: Outcome) -> JobState:
    """Store ``outcome`` as the job's end; returns the state the job is in afterwards."""
    return await asyncio.to_thread(_end_job, store, job_id, outcome)


def _end_job(store: Any, job_id: str, outcome: Outcome) -> JobState:
    state, reason = outcome
    job = store.get_job(job_id)
    if job.state is state or job.state.is_terminal():
        return job.state
    if state is JobState.PENDING and job.state is JobState.CANCELLING:
        state, reason = JobState.CANCELLED, "cancelled while the service stopped"
    if state is JobState.SUCCEEDED and job.state is JobState.CANCELLING:
        reason = "finished before the cancel took effect"
    rewind = None
    if state is JobState.PENDING:
        rewind = _resume_step(store, job_id)
        reason = f"{reason}: resumes from step {rewind}"
    try:
        store.transition(job_id, state, reason, rewind_to_step=rewind)
    except FailedPrecondition as err:  # never leave the job without an end
        logger.error("job %s: cannot end %s (%s); failing it", job_id, state.value, err)
        state = JobState.FAILED
        store.transition(job_id, state, f"{reason} (could not end as {outcome.state.value})")
    return state


def _resume_step(store: Any, job_id: str) -> int:
    latest = store.latest_checkpoint(job_id)
    return latest.step if latest else 0


async def requeue(store: Any, job_id: str, reason: str) -> bool:
    """Rewind a RUNNING job to its latest checkpoint (RUNNING -> PENDING -> RUNNING, each
    recorded as an event); False when it is not RUNNING any more (a cancel came first)."""
    try:
        await asyncio.to_thread(_requeue, store, job_id, reason)
    except FailedPrecondition:
        return False
    return True


def _requeue(store: Any, job_id: str, reason: str) -> None:
    step = _resume_step(store, job_id)
    store.transition(
        job_id, JobState.PENDING, f"{reason}: resuming from step {step}", rewind_to_step=step
    )
    store.transition(job_id, JobState.RUNNING, "started again")


async def run_job(store: Any, job_id: str, runner: Runner) -> JobState:
    """Run ``runner`` as the job ``job_id`` from PENDING to its end; see the module docstring."""
    if not await start_job(store, job_id):
        return (await asyncio.to_thread(store.get_job, job_id)).state
    try:
        outcome = await runner.execute()
    except asyncio.CancelledError:  # the service gave up waiting for it (shutdown timeout)
        await asyncio.shield(end_job(store, job_id, stopped_outcome(StopReason.SHUTDOWN)))
        raise
    except Exception as err:  # the job fails; the service goes on
        logger.exception("job %s failed", job_id)
        outcome = Outcome(JobState.FAILED, failure_reason(err))
    return await end_job(store, job_id, outcome)
