"""SIGKILL of the whole `star serve` process tree mid-job, then a restart on the same data.

The service runs as a real subprocess (its own local Ray instance, SQLite file, checkpoints) in a
process group of its own; the test kills that group, checks that nothing of it is left, starts
the service again on the same data directory and follows the job to its end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from services.client import StarClient, StarError
from services.generated.star.v1 import job_pb2
from tests.cluster.local_cluster import free_port, session_processes
from tests.services.service_fixtures import tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.processes]  # star serve processes

STARTUP_TIMEOUT_S = 180.0
STEP_TIMEOUT_S = 300.0
# Seconds each health check waits for the server to listen.
HEALTH_WAIT_S = 2.0
# Seconds the killed group's processes get to disappear.
REAP_TIMEOUT_S = 30.0


class ServeProcess:
    """`star serve` in a new session (so its whole tree can be killed as one group)."""

    def __init__(self, data_dir: Path, port: int, log: Path):
        self.port = port
        self.log = open(log, "ab")  # noqa: SIM115 (closed in kill)
        command = [
            sys.executable,
            "-m",
            "services.cli.main",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--dashboard-port",
            str(free_port()),
        ]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def wait_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with StarClient(f"127.0.0.1:{self.port}") as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, "star serve exited"
                with contextlib.suppress(StarError):
                    if client.health(HEALTH_WAIT_S, wait_for_ready=True) == "SERVING":
                        return
        raise AssertionError("star serve did not start serving")

    def terminate(self) -> int:
        """SIGTERM, as a service manager stops it; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the whole process group; the processes of the session still alive after
        REAP_TIMEOUT_S (those the service started and that escaped the group)."""
        sid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()
        deadline = time.monotonic() + REAP_TIMEOUT_S
        while time.monotonic() < deadline and session_processes(sid):
            time.sleep(0.5)
        left = session_processes(sid)
        for process in left:  # never leave anything behind, whatever the assertion says
            process.kill()
        return left


def _events_until(client: StarClient, job_id: str, until) -> list[job_pb2.JobEvent]:
    """The job's events up to the first for which ``until`` is true, or to its terminal one."""
    events = []
    for event in client.watch(job_id, timeout=STEP_TIMEOUT_S):
        events.append(event)
        if until(event):
            break
    return events


def test_sigkill_of_the_service_tree_then_restart_resumes_the_job(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    first = ServeProcess(data_dir, port, tmp_path / "serve.log")
    second = None
    try:
        first.wait_serving()
        with StarClient(f"127.0.0.1:{port}") as client:
            # Every checkpoint kept (retention would prune the early ones after the restart):
            # the test checks that none is lost or corrupted by the kill.
            spec = tiny_spec(outer_steps=60, checkpoint_interval=5, keep_checkpoints=20)
            job = client.submit(spec, request_id="kill-me")
            _events_until(
                client,
                job.job_id,
                lambda e: e.WhichOneof("event") == "metrics" and e.metrics.step >= 12,
            )
            before = client.checkpoints(job.job_id)
        assert max(c.step for c in before) >= 10
        left = first.kill()
        assert left == [], [p.cmdline() for p in left]

        second = ServeProcess(data_dir, port, tmp_path / "serve.log")
        second.wait_serving()
        with StarClient(f"127.0.0.1:{port}") as client:
            resumed = client.get_job(job.job_id)
            latest = max(c.step for c in before)
            assert resumed.step >= latest
            events = _events_until(client, job.job_id, lambda e: False)
            after = client.checkpoints(job.job_id)
            kept = {c.checkpoint_id: c for c in after}
            for checkpoint in before:  # nothing lost or corrupt
                assert kept[checkpoint.checkpoint_id] == checkpoint
                fetched = client.fetch(checkpoint.checkpoint_id, tmp_path)  # sha256-checked
                data = fetched.path.read_bytes()
                assert hashlib.sha256(data).hexdigest() == fetched.sha256 == checkpoint.sha256
        assert second.terminate() == 0  # a clean stop
    finally:
        first.kill()
        if second is not None:
            left = second.kill()
    assert left == []
    assert events[-1].state_change.to_state == job_pb2.JOB_STATE_SUCCEEDED
    reasons = [e.state_change.reason for e in events if e.WhichOneof("event") == "state_change"]
    assert any("restarted" in reason for reason in reasons), reasons
    requeue = next(
        i
        for i, e in enumerate(events)
        if e.WhichOneof("event") == "state_change" and "restarted" in e.state_change.reason
    )
    # The job resumes from its latest checkpoint at the kill (the one listed before it, or one
    # written between that listing and the kill), and its step never goes below it again.
    resumed_from = events[requeue].job.step
    assert resumed_from >= latest and resumed_from in {c.step for c in after}
    later = [e.metrics.step for e in events[requeue:] if e.WhichOneof("event") == "metrics"]
    assert later == list(range(resumed_from + 1, 61))
    assert all(e.job.step >= resumed_from for e in events[requeue:])
