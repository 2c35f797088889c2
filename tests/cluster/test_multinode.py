"""STAR on a Ray cluster of several nodes: real ``ray start`` processes, real ``star serve``.

The cluster (tests/cluster/conftest.py) is a head with no CPUs and worker nodes ``a`` and ``b``
with one CPU each, so a 2-worker job has one worker on each worker node and none on the head.
``star serve --ray-address`` joins it as a process of its own, as on a real cluster; the tests
drive it through the gRPC API and check where Ray put the actors with Ray's state API.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.cluster.learner import learner_name, worker_name
from services.cluster.pool import STRAGGLER_TIMEOUT_S
from services.generated.star.v1 import job_pb2
from star_core.training.checkpoint import load_checkpoint
from tests.cluster.local_cluster import BIN
from tests.cluster.star_server import StarServer, logs, metrics_steps, tiny_spec, watch

pytestmark = pytest.mark.slow

# Seconds a job may take from submission to its end (actor start-up and JIT included).
JOB_TIMEOUT_S = 240.0


def is_metrics(event: job_pb2.JobEvent, at_least: int = 1) -> bool:
    return event.WhichOneof("event") == "metrics" and event.metrics.step >= at_least


def actor_nodes(cluster, job_id: str, num_workers: int) -> tuple[str, list[str]]:
    """(node id of the job's learner, node ids of its workers) from Ray's state API. Dead
    actors count too: a tiny job may have ended (and its actors with it) by the time we ask."""
    (learner,) = cluster.actors(learner_name(job_id), alive_only=False)
    workers = [cluster.actors(worker_name(job_id, i), alive_only=False) for i in range(num_workers)]
    assert all(len(found) == 1 for found in workers), workers
    return learner.node_id, [found[0].node_id for found in workers]


def leave_actors(cluster, names: list[str]) -> None:
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("leftover_actors.py")),
            cluster.address,
            *names,
        ],
        env=cluster.env,
        check=True,
        timeout=120,
    )


def test_two_worker_job_runs_on_the_worker_nodes_and_checkpoints(cluster, star, tmp_path):
    nodes = cluster.require_worker_nodes()
    job = star.client.submit(
        tiny_spec(outer_steps=4, num_workers=2, checkpoint_interval=2), request_id="two-workers"
    )
    events = list(watch(star.client, job.job_id, JOB_TIMEOUT_S, until=is_metrics))
    learner_node, worker_nodes = actor_nodes(cluster, job.job_id, 2)
    events += watch(star.client, job.job_id, JOB_TIMEOUT_S, after_seq=events[-1].seq)

    # One worker on each worker node (one CPU each), none on the head (no CPU).
    assert sorted(worker_nodes) == sorted([nodes["a"], nodes["b"]])
    assert learner_node in nodes.values()
    done = star.client.get_job(job.job_id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, star.log_tail())
    assert (done.step, done.device) == (4, "cpu")
    assert sorted(done.worker_nodes) == sorted(worker_nodes)
    assert metrics_steps(events) == [1, 2, 3, 4]

    checkpoints = star.client.checkpoints(job.job_id)
    assert [c.step for c in checkpoints] == [2, 4]
    fetched = star.client.fetch(checkpoints[-1].checkpoint_id, tmp_path)  # sha256-checked
    data = fetched.path.read_bytes()
    assert len(data) == fetched.size_bytes == checkpoints[-1].size_bytes
    assert hashlib.sha256(data).hexdigest() == fetched.sha256 == checkpoints[-1].sha256
    metadata = load_checkpoint(data).metadata
    assert (metadata["step"], metadata["job_id"]) == (4, job.job_id)


def test_worker_resources_place_the_workers_on_the_node_that_has_them(cluster, star):
    nodes = cluster.require_worker_nodes()
    spec = tiny_spec(
        outer_steps=2, num_workers=1, checkpoint_interval=2, worker_resources={"node_a": 1}
    )
    job = star.client.submit(spec, request_id="on-node-a")
    events = list(watch(star.client, job.job_id, JOB_TIMEOUT_S, until=is_metrics))
    _, worker_nodes = actor_nodes(cluster, job.job_id, 1)
    events += watch(star.client, job.job_id, JOB_TIMEOUT_S, after_seq=events[-1].seq)

    assert worker_nodes == [nodes["a"]]
    done = star.client.get_job(job.job_id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, star.log_tail())
    assert list(done.worker_nodes) == [nodes["a"]]
    assert dict(done.spec.worker_resources) == {"node_a": 1.0}
    status = subprocess.run(
        [str(BIN / "star"), "status", job.job_id, "--server", star.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=cluster.env,
    )
    assert status.returncode == 0, status.stderr
    assert re.search(rf"^workers +1 on {nodes['a']}$", status.stdout, re.MULTILINE), status.stdout


def test_a_worker_node_dies_mid_job_and_the_job_completes_on_the_other(cluster, star):
    nodes = cluster.require_worker_nodes()
    # Enough to kill a node while the job runs: a step takes ~10 ms on an idle machine (100 steps
    # were over before the node's processes were all dead) to ~50 ms on a busy one.
    steps = 400
    spec = tiny_spec(outer_steps=steps, num_workers=2, checkpoint_interval=steps)
    job = star.client.submit(spec, request_id="node-dies")
    events = list(watch(star.client, job.job_id, JOB_TIMEOUT_S, until=is_metrics))
    learner_node, worker_nodes = actor_nodes(cluster, job.job_id, 2)
    # The node to kill runs a worker and not the learner (a lost learner is another story: the
    # runner restarts it from the latest checkpoint).
    victim = next(name for name in ("b", "a") if nodes[name] != learner_node)
    survivor = "a" if victim == "b" else "b"
    step_at_kill = star.client.get_job(job.job_id).step
    leftovers = cluster.kill_node(victim)
    step_after_kill = star.client.get_job(job.job_id).step
    events += watch(star.client, job.job_id, JOB_TIMEOUT_S, after_seq=events[-1].seq)

    assert leftovers == [], "processes of the killed node outlived its process group"
    assert 1 <= step_at_kill <= step_after_kill < steps, "the node was not killed while the job ran"
    cluster.wait_for_death(victim)  # the GCS saw it die
    done = star.client.get_job(job.job_id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, star.log_tail())
    assert metrics_steps(events) == list(range(1, steps + 1))
    lost = worker_nodes.index(nodes[victim])
    assert any(f"worker {lost} failed" in message for message in logs(events)), logs(events)
    assert done.metrics.worker_restarts >= 1
    assert done.metrics.extra["live_workers"] == 1.0  # the survivor's worker alone at the end
    assert cluster.actors(worker_name(job.job_id, 1 - lost)) == []  # ended with the job
    # The learner never went longer between two steps than its straggler timeout, the bound
    # the service promises: it waits for a lost worker only until Ray reports the failed call
    # (a few seconds here), and never longer than STRAGGLER_TIMEOUT_S without any estimate.
    times = [e.time.ToDatetime() for e in events if e.WhichOneof("event") == "metrics"]
    longest = max((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    assert longest < STRAGGLER_TIMEOUT_S, f"the learner stalled {longest:.1f} s"
    assert nodes[survivor] in done.worker_nodes


def test_a_fresh_service_on_the_same_data_dir_resumes_the_jobs_of_a_dead_one(cluster, tmp_path):
    cluster.require_worker_nodes()
    data_dir = tmp_path / "data"
    first = StarServer(cluster, data_dir, tmp_path / "first.log")
    second = StarServer(cluster, data_dir, tmp_path / "second.log")
    steps = 100  # a step takes ~10-50 ms here: the service dies while the job runs
    try:
        first.start()
        job = first.client.submit(
            # Every checkpoint kept: the test checks the whole list after the restart.
            tiny_spec(outer_steps=steps, num_workers=1, checkpoint_interval=5, keep_checkpoints=20),
            request_id="survives-restart",
        )
        seen = list(
            watch(
                first.client,
                job.job_id,
                JOB_TIMEOUT_S,
                until=lambda e: e.WhichOneof("event") == "checkpoint_written",
            )
        )
        saved = seen[-1].checkpoint_written.checkpoint
        assert first.kill() == []  # SIGKILL mid-job: no clean stop, no last checkpoint
        # Actors holding the job's names, as a learner whose node died leaves them until the
        # GCS notices: the new service must clear them, not fail on them.
        leave_actors(cluster, [learner_name(job.job_id), worker_name(job.job_id, 0)])
        # Another "machine": a new process with the same data directory and cluster address.
        second.start()
        after = list(watch(second.client, job.job_id, JOB_TIMEOUT_S, after_seq=seen[-1].seq))
        done = second.client.get_job(job.job_id)
        checkpoints = second.client.checkpoints(job.job_id)
    finally:
        first.kill()
        assert second.stop() == []

    requeued = next(
        i
        for i, e in enumerate(after)
        if e.WhichOneof("event") == "state_change"
        and e.state_change.to_state == job_pb2.JOB_STATE_PENDING
    )
    resumed_from = after[requeued].job.step  # the latest checkpoint when the service died
    assert resumed_from < steps, "the service was not killed while the job ran"
    assert resumed_from >= saved.step and resumed_from % 5 == 0
    assert "the service restarted" in after[requeued].state_change.reason
    # The job's step never went below the checkpoint the client saw before the service died,
    # and the new service went on from the latest checkpoint, not from the start.
    assert min(e.job.step for e in after) >= saved.step
    assert metrics_steps(after[requeued:]) == list(range(resumed_from + 1, steps + 1))
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (done.error, second.log_tail())
    assert done.step == steps
    assert saved.checkpoint_id in [c.checkpoint_id for c in checkpoints]
    assert [c.step for c in checkpoints] == list(range(5, steps + 1, 5))
    assert cluster.actors(worker_name(job.job_id, 0)) == []  # the leftover too
