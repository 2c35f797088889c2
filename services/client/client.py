"""``StarClient``: every RPC of ``star.v1.MetaTraining`` as a Python method.

The methods return the API's own messages (``services.generated.star.v1``): ``Job``,
``JobEvent``, ``Checkpoint``, ``Schedule``, ``DeleteJobResponse``; their fields are documented
in ``proto/star/v1/*.proto``. ``fetch`` returns a small :class:`~services.client.Fetched`.
A failed call raises :class:`~services.client.StarError` (code, message, field); arguments
the client cannot even send (an unknown spec field, an unknown state name) raise ``ValueError``
or ``TypeError`` before any call.

Unary calls have a deadline (``timeout`` seconds); ``watch`` and ``fetch`` have none unless
asked, and reopen a cut stream (:class:`~services.client.RetryPolicy`). ``submit``,
``evaluate`` and ``create_schedule`` send a request id (a fresh uuid unless one is given), so a
call that gRPC retries after a lost connection never creates a second job or schedule.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.client.connection import DEFAULT_TIMEOUT_S, call_metadata, open_channel
from services.client.errors import from_rpc_error
from services.client.names import overlap_policy_value, state_value
from services.client.specs import job_spec
from services.client.streams import Fetched, Progress, RetryPolicy, download, follow
from services.generated.star.v1 import job_pb2, schedule_pb2, service_pb2, service_pb2_grpc

# How cut streams are reopened when the caller does not say (StarClient(retry=...)).
DEFAULT_RETRY = RetryPolicy()
# Items per page of list_jobs / list_schedules (the server caps pages at 1000).
DEFAULT_PAGE_SIZE = 100
# What fetch names the file when it is given a directory: DIR/<checkpoint_id><suffix>.
CHECKPOINT_SUFFIX = ".safetensors"
# The gRPC service name STAR's health status is reported under.
SERVICE_NAME = "star.v1.MetaTraining"


class StarClient:
    """A connection to a STAR server at ``server`` (``HOST:PORT``); close it, or use it as a
    context manager. Thread-safe: threads may share one client."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        tls_ca: str | os.PathLike | bytes | None = None,
        tls_server_name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ):
        self.server = server
        self.timeout = timeout
        self.tls = tls_ca is not None
        self.retry = retry if retry is not None else DEFAULT_RETRY
        self._metadata = call_metadata(token)
        self._channel = open_channel(server, token, tls_ca, tls_server_name)
        self._stub = service_pb2_grpc.MetaTrainingStub(self._channel)

    def __enter__(self) -> StarClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (calls in flight end CANCELLED)."""
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=self.timeout
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, method) from None

    def _pages(
        self, method: str, items: str, make_request: Callable, limit: int | None, size: int
    ) -> Iterator[Any]:
        """The items of a paginated List RPC, following ``next_page_token``."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if size < 1:
            raise ValueError(f"page_size must be >= 1, got {size}")

        def pages() -> Iterator[Any]:
            token, left = "", limit
            while left is None or left > 0:
                want = size if left is None else min(size, left)
                page = self._call(method, make_request(page_size=want, page_token=token))
                found = list(getattr(page, items))[:left]
                yield from found
                left = None if left is None else left - len(found)
                token = page.next_page_token
                if not token:
                    return

        return pages()

    # ----- jobs -------------------------------------------------------------------------------

    def submit(self, spec: Any, request_id: str | None = None) -> job_pb2.Job:
        """Submit a meta-training job; the new job (PENDING). ``spec``: a ``JobSpec``, a
        ``services.domain.TrainingSpec``, a mapping in the JobSpec's JSON form, or the path of
        a JSON/YAML file holding one (``services.client.specs``). The same ``request_id`` and
        spec give the same job; the same id with another spec is ALREADY_EXISTS."""
        request = service_pb2.SubmitJobRequest(
            spec=job_spec(spec), request_id=request_id or uuid.uuid4().hex
        )
        return self._call("SubmitJob", request)

    def get_job(self, job_id: str) -> job_pb2.Job:
        return self._call("GetJob", service_pb2.GetJobRequest(job_id=job_id))

    def list_jobs(
        self,
        states: Iterable[Any] = (),
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[job_pb2.Job]:
        """Jobs newest first, across pages, up to ``limit`` (None: all); ``states`` filters by
        state (``"running"``, ``job_pb2.JOB_STATE_RUNNING`` or ``JobState.RUNNING``)."""
        values = [state_value(s) for s in states]

        def request(**page: Any) -> service_pb2.ListJobsRequest:
            return service_pb2.ListJobsRequest(states=values, **page)

        return self._pages("ListJobs", "jobs", request, limit, page_size)

    def cancel(self, job_id: str) -> job_pb2.Job:
        """Ask a job to stop: PENDING becomes CANCELLED, RUNNING becomes CANCELLING (it writes
        a checkpoint, then is CANCELLED). A finished job is returned unchanged."""
        return self._call("CancelJob", service_pb2.CancelJobRequest(job_id=job_id))

    def delete_job(self, job_id: str) -> service_pb2.DeleteJobResponse:
        """Delete a finished job with its events and checkpoint files (FAILED_PRECONDITION
        while it is active); checkpoints used as a warm start are kept."""
        return self._call("DeleteJob", service_pb2.DeleteJobRequest(job_id=job_id))

    def watch(
        self, job_id: str, after_seq: int = 0, from_step: int = 0, timeout: float | None = None
    ) -> Iterator[job_pb2.JobEvent]:
        """The job's events after ``after_seq``, live, up to and including the one that moves
        it to SUCCEEDED, FAILED or CANCELLED (a finished job replays its events). A cut stream
        is reopened after the last event seen; ``from_step`` skips metrics events of earlier
        outer steps; ``timeout`` (seconds, None: none) bounds the whole watch."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def open_call(seq: int, remaining: float | None) -> Any:
            request = service_pb2.WatchJobRequest(job_id=job_id, after_seq=seq, from_step=from_step)
            return self._stub.WatchJob(request, metadata=self._metadata, timeout=remaining)

        return follow(open_call, job_id, after_seq, self.retry, deadline)

    def checkpoints(self, job_id: str) -> list[job_pb2.Checkpoint]:
        """The job's checkpoints, oldest first."""
        request = service_pb2.ListCheckpointsRequest(job_id=job_id)
        return list(self._call("ListCheckpoints", request).checkpoints)

    def fetch(
        self, checkpoint_id: str, path: str | os.PathLike, progress: Progress | None = None
    ) -> Fetched:
        """Download a checkpoint to ``path`` (a directory: ``DIR/<checkpoint_id>.safetensors``),
        resuming ``path.part`` if a previous download was cut, and verify its SHA-256
        (``services.client.streams``). ``progress(received, total)`` is called per chunk."""
        out = Path(path)
        if out.is_dir():
            out = out / f"{checkpoint_id}{CHECKPOINT_SUFFIX}"
        if not out.parent.is_dir():
            raise NotADirectoryError(f"{out}: {out.parent} is not a directory")

        def open_call(offset: int, _timeout: float | None) -> Any:
            request = service_pb2.FetchCheckpointRequest(checkpoint_id=checkpoint_id, offset=offset)
            return self._stub.FetchCheckpoint(request, metadata=self._metadata)

        return download(open_call, checkpoint_id, out, self.retry, progress)

    def evaluate(
        self,
        checkpoint_id: str,
        task: str = "",
        steps: int | None = None,
        seeds: int | None = None,
        baselines: Iterable[str] = (),
        request_id: str | None = None,
    ) -> job_pb2.Job:
        """Run the evaluation protocol on a checkpoint as a job (JOB_KIND_EVALUATION); its
        summaries land in ``Job.evaluation`` when it succeeds. Unset values take the server's
        defaults (the checkpoint's first task, 10 x its horizon, 3 seeds, no baselines)."""
        request = service_pb2.EvaluateRequest(
            checkpoint_id=checkpoint_id,
            task=task,
            baselines=list(baselines),
            request_id=request_id or uuid.uuid4().hex,
        )
        for name, value in (("steps", steps), ("seeds", seeds)):
            if value is not None:
                try:
                    setattr(request, name, value)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{name}: {err}") from None
        return self._call("Evaluate", request)

    # ----- schedules --------------------------------------------------------------------------

    def create_schedule(
        self,
        template: Any,
        cron: str,
        timezone: str = "UTC",
        overlap: Any = "skip",
        warm_start_from_previous: bool = False,
        paused: bool = False,
        request_id: str | None = None,
    ) -> schedule_pb2.Schedule:
        """A schedule that submits ``template`` (any spec :meth:`submit` takes) at each time
        of ``cron`` (5 fields, read in ``timezone``). ``overlap``: what a firing does while the
        previous job is active, ``"skip"``, ``"queue"`` or ``"cancel_previous"``."""
        schedule = schedule_pb2.Schedule(
            cron=cron,
            timezone=timezone,
            template=job_spec(template),
            overlap_policy=overlap_policy_value(overlap),
            warm_start_from_previous=warm_start_from_previous,
            paused=paused,
        )
        request = service_pb2.CreateScheduleRequest(
            schedule=schedule, request_id=request_id or uuid.uuid4().hex
        )
        return self._call("CreateSchedule", request)

    def list_schedules(
        self, limit: int | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[schedule_pb2.Schedule]:
        """Schedules across pages, up to ``limit`` (None: all)."""
        return self._pages(
            "ListSchedules", "schedules", service_pb2.ListSchedulesRequest, limit, page_size
        )

    def pause_schedule(self, schedule_id: str) -> schedule_pb2.Schedule:
        request = service_pb2.PauseScheduleRequest(schedule_id=schedule_id)
        return self._call("PauseSchedule", request)

    def resume_schedule(self, schedule_id: str) -> schedule_pb2.Schedule:
        request = service_pb2.ResumeScheduleRequest(schedule_id=schedule_id)
        return self._call("ResumeSchedule", request)

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (its jobs are kept; running ones keep running)."""
        self._call("DeleteSchedule", service_pb2.DeleteScheduleRequest(schedule_id=schedule_id))

    # ----- the server -------------------------------------------------------------------------

    def health(self, timeout: float | None = None, wait_for_ready: bool = False) -> str:
        """The server's health status for the STAR service (``"SERVING"``, ``"NOT_SERVING"``),
        from standard gRPC health checking (no token needed). ``wait_for_ready``: wait up to
        ``timeout`` for a server to listen instead of failing UNAVAILABLE at once."""
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            # the stubs leave out the methods HealthStub's __init__ sets
            answer = health_pb2_grpc.HealthStub(self._channel).Check(  # type: ignore[attr-defined]
                request,
                timeout=self.timeout if timeout is None else timeout,
                wait_for_ready=wait_for_ready,
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, "Check") from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
