"""The ``star.v1.MetaTraining`` servicer (grpc.aio): thin handlers over the store and manager.

Each handler validates its request once (``services.api.convert``, ConfigError naming the
field), calls the store, the job manager or the scheduler, and converts the result back; errors
become status codes in one place (``services.api.errors``). The servicer keeps no job state.

WatchJob is backed by the store: every event has a per-job sequence number, the stream sends
the events after the client's ``after_seq`` (and, with ``from_step``, skips earlier metrics),
waits for new ones on a notification from the store (no polling), and always ends with the
job's terminal state-change event, also for a client that reconnects after it. ``after_seq``
takes precedence over ``from_step``: a client that resumes with both gets every event after its
seq, metrics included. At most ``max_streams`` streams are open at once (RESOURCE_EXHAUSTED past
it); a client that leaves mid-stream costs nothing.

FetchCheckpoint streams are bounded too (``max_fetch_streams``): each holds an open file and up
to a few MiB of buffered chunks for as long as its client does not read.

DeleteJob deletes the rows of a finished job in one transaction (``Store.delete_job``), then
the files of the checkpoints it dropped; a crash in between leaves files that the next start's
sweep removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from services.api import convert
from services.api.errors import streaming, unary
from services.domain import EventKind, JobKind, JobState, NotFound, ResourceExhausted
from services.generated.star.v1 import job_pb2, service_pb2, service_pb2_grpc
from star_core.errors import ConfigError

logger = logging.getLogger(__name__)

# Open WatchJob streams allowed at once.
DEFAULT_MAX_STREAMS = 256
# Open FetchCheckpoint streams allowed at once (each holds a file and ~5 MiB while its client
# does not read: 100 stalled streams of an 8 MiB file grew the server by 530 MiB).
DEFAULT_MAX_FETCH_STREAMS = 32
# The largest after_seq (an event's seq is a signed 64-bit SQLite integer).
MAX_SEQ = (1 << 63) - 1
# Bytes per CheckpointChunk.
CHUNK_BYTES = 1 << 20
# Seconds a quiet WatchJob stream waits before re-reading the store (a safety net only:
# new events wake it at once).
WATCH_REREAD_S = 30.0
# The JobSpec field a bad warm-start checkpoint is reported under.
WARM_START_FIELD = "spec.warm_start_checkpoint_id"


class MetaTrainingServicer(service_pb2_grpc.MetaTrainingServicer):
    """See the module docstring. ``scheduler`` may be None (schedules then FAILED_PRECONDITION)."""

    def __init__(
        self,
        store: Any,
        checkpoints: Any,
        manager: Any,
        scheduler: Any = None,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_fetch_streams: int = DEFAULT_MAX_FETCH_STREAMS,
    ):
        self.store = store
        self.checkpoints = checkpoints
        self.manager = manager
        self.scheduler = scheduler
        self.max_streams = max_streams
        self.max_fetch_streams = max_fetch_streams
        self._streams = 0
        self._fetch_streams = 0

    # -- jobs ----------------------------------------------------------------------------------

    @unary
    async def SubmitJob(self, request, context) -> job_pb2.Job:
        submission = convert.submit_request(request)
        if submission.spec.warm_start_checkpoint_id:
            await asyncio.to_thread(self._check_warm_start, submission.spec)
        job = await self.manager.submit(submission.spec_json, request_id=submission.request_id)
        return convert.job_to_proto(job)

    def _check_warm_start(self, spec: Any) -> None:
        """Refuse a warm start from a checkpoint that does not fit (before any work starts)."""
        from star_core.training.learner import Learner

        try:
            record = self.store.get_checkpoint(spec.warm_start_checkpoint_id)
            data = self.checkpoints.read_bytes(record)
            Learner(spec.config).warm_start_theta(data)
        except NotFound as err:
            raise ConfigError(WARM_START_FIELD, f"unknown checkpoint ({err})") from err
        except ValueError as err:  # ConfigError included: a checkpoint that does not fit
            raise ConfigError(WARM_START_FIELD, str(err)) from err

    @unary
    async def GetJob(self, request, context) -> job_pb2.Job:
        job = await asyncio.to_thread(self.store.get_job, request.job_id)
        return convert.job_to_proto(job)

    @unary
    async def ListJobs(self, request, context) -> service_pb2.ListJobsResponse:
        states = convert.states_filter(request)
        if request.page_size < 0:
            raise ConfigError("page_size", "page_size must be >= 0")
        jobs, token = await asyncio.to_thread(
            self.store.list_jobs, states, request.page_size, request.page_token
        )
        return service_pb2.ListJobsResponse(
            jobs=[convert.job_to_proto(j) for j in jobs], next_page_token=token
        )

    @unary
    async def CancelJob(self, request, context) -> job_pb2.Job:
        return convert.job_to_proto(await self.manager.cancel(request.job_id))

    @unary
    async def Evaluate(self, request, context) -> job_pb2.Job:
        submission = convert.evaluate_request(request)
        await asyncio.to_thread(self.store.get_checkpoint, submission.spec.checkpoint_id)
        job = await self.manager.submit(
            submission.spec_json, kind=JobKind.EVALUATION, request_id=submission.request_id
        )
        return convert.job_to_proto(job)

    @unary
    async def DeleteJob(self, request, context) -> service_pb2.DeleteJobResponse:
        if not request.job_id:
            raise ConfigError("job_id", "job_id is required")
        deleted = await asyncio.to_thread(self.store.delete_job, request.job_id)
        await asyncio.to_thread(self.checkpoints.delete, deleted.deleted + deleted.released)
        return service_pb2.DeleteJobResponse(
            deleted_checkpoints=len(deleted.deleted),
            kept_checkpoint_ids=[r.checkpoint_id for r in deleted.kept],
        )

    @streaming
    async def WatchJob(self, request, context) -> AsyncGenerator[job_pb2.JobEvent, None]:
        if request.after_seq > MAX_SEQ:
            raise ConfigError("after_seq", f"after_seq must be at most {MAX_SEQ}")
        job = await asyncio.to_thread(self.store.get_job, request.job_id)
        if self._streams >= self.max_streams:
            raise ResourceExhausted(
                f"{self._streams} WatchJob streams are open (at most {self.max_streams});"
                " try again later"
            )
        self._streams += 1
        woken = asyncio.Event()
        loop = asyncio.get_running_loop()

        def listener(job_id: str, seq: int) -> None:
            if job_id == job.job_id:
                loop.call_soon_threadsafe(woken.set)

        unsubscribe = self.store.subscribe(listener)
        try:
            async with contextlib.aclosing(self._watch(job.job_id, request, woken)) as events:
                async for event in events:
                    yield event
        finally:
            unsubscribe()
            self._streams -= 1

    async def _watch(self, job_id: str, request: Any, woken: asyncio.Event):
        last = request.after_seq
        from_step = 0 if last > 0 else request.from_step  # after_seq takes precedence
        while True:
            woken.clear()
            events = await asyncio.to_thread(
                self.store.events_after, job_id, last, from_step=from_step
            )
            for event in events:
                yield convert.event_to_proto(event)
                last = event.seq
                if _is_terminal(event):
                    return
            if not events:
                job = await asyncio.to_thread(self.store.get_job, job_id)
                if job.state.is_terminal() and last >= job.last_seq:
                    # A client that resumes after the end gets the terminal event again.
                    for event in await asyncio.to_thread(
                        self.store.events_after, job_id, job.last_seq - 1
                    ):
                        yield convert.event_to_proto(event)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), WATCH_REREAD_S)

    # -- checkpoints ---------------------------------------------------------------------------

    @unary
    async def ListCheckpoints(self, request, context) -> service_pb2.ListCheckpointsResponse:
        records = await asyncio.to_thread(self.store.list_checkpoints, request.job_id)
        return service_pb2.ListCheckpointsResponse(
            checkpoints=[convert.checkpoint_to_proto(r) for r in records]
        )

    @streaming
    async def FetchCheckpoint(
        self, request, context
    ) -> AsyncGenerator[job_pb2.CheckpointChunk, None]:
        if not request.checkpoint_id:
            raise ConfigError("checkpoint_id", "checkpoint_id is required")
        if self._fetch_streams >= self.max_fetch_streams:
            raise ResourceExhausted(
                f"{self._fetch_streams} FetchCheckpoint streams are open (at most"
                f" {self.max_fetch_streams}, --max-fetch-streams); try again later"
            )
        self._fetch_streams += 1
        try:
            async with contextlib.aclosing(self._fetch(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self._fetch_streams -= 1

    async def _fetch(self, request: Any) -> AsyncGenerator[job_pb2.CheckpointChunk, None]:
        record = await asyncio.to_thread(self.store.get_checkpoint, request.checkpoint_id)
        handle = await asyncio.to_thread(self.checkpoints.open, record)
        try:
            total = record.size_bytes
            if not 0 <= request.offset <= total:
                raise ConfigError("offset", f"offset must be in [0, {total}], got {request.offset}")
            offset = request.offset
            await asyncio.to_thread(handle.seek, offset)
            while offset < total:
                data = await asyncio.to_thread(handle.read, CHUNK_BYTES)
                if not data:
                    raise RuntimeError(
                        f"checkpoint {record.checkpoint_id}: file shorter than its record"
                    )
                yield job_pb2.CheckpointChunk(
                    data=data, offset=offset, total_size=total, sha256=record.sha256
                )
                offset += len(data)
            if total == 0:
                yield job_pb2.CheckpointChunk(offset=0, total_size=0, sha256=record.sha256)
        finally:
            handle.close()

    # -- schedules -----------------------------------------------------------------------------

    def _need_scheduler(self) -> Any:
        if self.scheduler is None:
            from services.domain import FailedPrecondition

            raise FailedPrecondition("this server runs no scheduler")
        return self.scheduler

    @unary
    async def CreateSchedule(self, request, context):
        scheduler = self._need_scheduler()
        submission = convert.schedule_request(request)
        return convert.schedule_to_proto(await scheduler.create(submission))

    @unary
    async def ListSchedules(self, request, context) -> service_pb2.ListSchedulesResponse:
        if request.page_size < 0:
            raise ConfigError("page_size", "page_size must be >= 0")
        schedules, token = await asyncio.to_thread(
            self.store.list_schedules, request.page_size, request.page_token
        )
        return service_pb2.ListSchedulesResponse(
            schedules=[convert.schedule_to_proto(s) for s in schedules], next_page_token=token
        )

    @unary
    async def PauseSchedule(self, request, context):
        schedule = await self._need_scheduler().pause(request.schedule_id)
        return convert.schedule_to_proto(schedule)

    @unary
    async def ResumeSchedule(self, request, context):
        schedule = await self._need_scheduler().resume(request.schedule_id)
        return convert.schedule_to_proto(schedule)

    @unary
    async def DeleteSchedule(self, request, context) -> service_pb2.DeleteScheduleResponse:
        released = await self._need_scheduler().delete(request.schedule_id)
        await asyncio.to_thread(self.checkpoints.delete, released or [])
        return service_pb2.DeleteScheduleResponse()


def _is_terminal(event: Any) -> bool:
    """Whether ``event`` moved its job into a terminal state."""
    return event.kind is EventKind.STATE_CHANGE and JobState(event.payload["to"]).is_terminal()


def add_to_server(servicer: MetaTrainingServicer, server: grpc.aio.Server) -> None:
    service_pb2_grpc.add_MetaTrainingServicer_to_server(servicer, server)
