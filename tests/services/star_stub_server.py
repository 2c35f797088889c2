"""A small real gRPC server with the ``MetaTraining`` service, for the client's own tests.

It serves the RPCs from values the test sets (jobs, events, a checkpoint's bytes, schedules),
records the requests it got and their metadata, serves standard health checking, and can fail on
purpose (cut a stream, answer UNAVAILABLE once, announce a wrong SHA-256). The tests of
``services.client`` and of the ``star`` client commands use it; the real service's end-to-end
tests are elsewhere (they run the service itself).
"""

from __future__ import annotations

import hashlib
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.generated.star.v1 import job_pb2, schedule_pb2, service_pb2, service_pb2_grpc

# A JobSpec in the proto's JSON form, as a user writes it.
SPEC = {
    "tasks": ["nqm"],
    "optimizer": {"kind": "star", "constants": {"beta3": 1e-5}},
    "estimator": {"kind": "pes", "horizon": 40, "truncation_length": 10},
    "outer_steps": 30,
    "num_workers": 2,
}
SPEC_YAML = """\
tasks: [nqm]
optimizer: {kind: star, constants: {beta3: 1.0e-5}}
estimator:
  kind: pes
  horizon: 40
  truncation_length: 10
outer_steps: 30
num_workers: 2
"""
# Bytes per FetchCheckpoint chunk here (the real server sends ~1 MiB).
CHUNK = 1024
# Jobs per ListJobs page at most, whatever the client asks (forces pagination).
PAGE = 3
# When every schedule created here fires next: 2030-01-01 03:00 UTC.
NEXT_FIRE_SECONDS = 1893466800


class StubService(service_pb2_grpc.MetaTrainingServicer):
    def __init__(self) -> None:
        self.token = ""
        self.jobs: dict[str, job_pb2.Job] = {}
        self.events: dict[str, list[job_pb2.JobEvent]] = {}
        self.cut_watch_after: list[int] = []  # per WatchJob call: events sent before a cut
        self.end_watch_early = False  # end every stream without the terminal event
        self.data = b""
        self.sha256 = ""
        self.cut_fetch_after: list[int] = []  # per FetchCheckpoint call: chunks before a cut
        self.unavailable_once = False
        self.requests: dict[str, list] = {}
        self.metadata: dict[str, list] = {}  # per RPC: the metadata of each call
        self.schedules: list[schedule_pb2.Schedule] = []

    def _check(self, name: str, request, context) -> None:
        self.requests.setdefault(name, []).append(request)
        self.metadata.setdefault(name, []).append(tuple(context.invocation_metadata()))
        if (
            self.token
            and ("authorization", f"Bearer {self.token}") not in context.invocation_metadata()
        ):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if self.unavailable_once:
            self.unavailable_once = False
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")

    def _job(self, job_id: str, context) -> job_pb2.Job:
        if job_id not in self.jobs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id!r} not found")
        return self.jobs[job_id]

    def GetJob(self, request, context):
        self._check("GetJob", request, context)
        return self._job(request.job_id, context)

    def SubmitJob(self, request, context):
        self._check("SubmitJob", request, context)
        if request.spec.estimator.HasField("sigma") and request.spec.estimator.sigma <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "spec.estimator.sigma: must be > 0")
        return job_pb2.Job(
            job_id="job-new",
            state=job_pb2.JOB_STATE_PENDING,
            spec=request.spec,
            request_id=request.request_id,
        )

    def ListJobs(self, request, context):
        self._check("ListJobs", request, context)
        jobs = [j for j in self.jobs.values() if not request.states or j.state in request.states]
        start = int(request.page_token or 0)
        end = start + min(request.page_size, PAGE)
        token = str(end) if end < len(jobs) else ""
        return service_pb2.ListJobsResponse(jobs=jobs[start:end], next_page_token=token)

    def CancelJob(self, request, context):
        self._check("CancelJob", request, context)
        job = self._job(request.job_id, context)
        job.state = job_pb2.JOB_STATE_CANCELLED
        return job

    def DeleteJob(self, request, context):
        self._check("DeleteJob", request, context)
        self._job(request.job_id, context)
        del self.jobs[request.job_id]
        return service_pb2.DeleteJobResponse(deleted_checkpoints=2)

    def ListSchedules(self, request, context):
        self._check("ListSchedules", request, context)
        start = int(request.page_token or 0)
        end = start + min(request.page_size, PAGE)
        token = str(end) if end < len(self.schedules) else ""
        return service_pb2.ListSchedulesResponse(
            schedules=self.schedules[start:end], next_page_token=token
        )

    def ListCheckpoints(self, request, context):
        self._check("ListCheckpoints", request, context)
        self._job(request.job_id, context)
        return service_pb2.ListCheckpointsResponse()

    def Evaluate(self, request, context):
        self._check("Evaluate", request, context)
        return self._job("job-eval", context)

    def CreateSchedule(self, request, context):
        self._check("CreateSchedule", request, context)
        schedule = schedule_pb2.Schedule()
        schedule.CopyFrom(request.schedule)
        schedule.schedule_id = "sched-1"
        schedule.next_fire_time.seconds = NEXT_FIRE_SECONDS
        return schedule

    def PauseSchedule(self, request, context):
        self._check("PauseSchedule", request, context)
        return schedule_pb2.Schedule(
            schedule_id=request.schedule_id, cron="0 3 * * *", timezone="UTC", paused=True
        )

    def WatchJob(self, request, context):
        self._check("WatchJob", request, context)
        self._job(request.job_id, context)
        events = [e for e in self.events[request.job_id] if e.seq > request.after_seq]
        if not events:  # as the real server: a stream after the end sends the terminal event
            events = self.events[request.job_id][-1:]
        cut = self.cut_watch_after.pop(0) if self.cut_watch_after else None
        if self.end_watch_early:
            events = events[:-1]
        for sent, event in enumerate(events):
            if sent == cut:
                context.abort(grpc.StatusCode.UNAVAILABLE, "stream cut")
            yield event

    def FetchCheckpoint(self, request, context):
        self._check("FetchCheckpoint", request, context)
        if request.offset > len(self.data):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"offset: {request.offset} is past the end ({len(self.data)} bytes)",
            )
        cut = self.cut_fetch_after.pop(0) if self.cut_fetch_after else None
        sha = self.sha256 or hashlib.sha256(self.data).hexdigest()
        for sent, offset in enumerate(range(request.offset, len(self.data), CHUNK)):
            if sent == cut:
                context.abort(grpc.StatusCode.UNAVAILABLE, "stream cut")
            yield job_pb2.CheckpointChunk(
                data=self.data[offset : offset + CHUNK],
                offset=offset,
                total_size=len(self.data),
                sha256=sha,
            )


def start(tls: tuple[bytes, bytes] | None = None) -> tuple[grpc.Server, StubService, str]:
    """A started server on a free loopback port (TLS with ``(key, certificate)`` PEMs when
    given), its service and its address."""
    service = StubService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_MetaTrainingServicer_to_server(service, server)
    status = health.HealthServicer()
    status.set("star.v1.MetaTraining", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([tls]))
    server.start()
    return server, service, f"127.0.0.1:{port}"


def job_events(job_id: str, final: int, error: str = "") -> list[job_pb2.JobEvent]:
    """A job's events: RUNNING, metrics of step 1, a warning, a checkpoint, metrics of step 2,
    then the change to ``final``."""
    spec = job_pb2.JobSpec(outer_steps=2)
    running, done = job_pb2.JOB_STATE_RUNNING, final

    def event(seq: int, step: int, state: int, **what) -> job_pb2.JobEvent:
        job = job_pb2.Job(job_id=job_id, state=state, step=step, spec=spec, error=error)
        return job_pb2.JobEvent(job=job, seq=seq, **what)

    metrics = [
        job_pb2.MetricsUpdate(
            step=s, metrics=job_pb2.JobMetrics(meta_loss=0.5 / s, inner_steps_per_second=100.0 * s)
        )
        for s in (1, 2)
    ]
    return [
        event(
            1,
            0,
            running,
            state_change=job_pb2.StateChange(
                from_state=job_pb2.JOB_STATE_PENDING, to_state=running, reason="placed"
            ),
        ),
        event(2, 1, running, metrics=metrics[0]),
        event(
            3,
            1,
            running,
            log=job_pb2.LogMessage(level=job_pb2.LOG_LEVEL_WARNING, message="worker 1 restarted"),
        ),
        event(
            4,
            1,
            running,
            checkpoint_written=job_pb2.CheckpointWritten(
                checkpoint=job_pb2.Checkpoint(checkpoint_id="ckpt-a", step=1)
            ),
        ),
        event(5, 2, running, metrics=metrics[1]),
        event(
            6,
            2,
            done,
            state_change=job_pb2.StateChange(
                from_state=running, to_state=done, reason=error or "all steps done"
            ),
        ),
    ]
