"""The service with GPU workers: inner steps/s of PES jobs with 1, 2, 4 and 8 workers.

One local Ray instance (``ray.init`` as the service's embedded default does it, but without a
dashboard: learner slots, the machine's CPUs but at least one per worker, its GPUs counted by
``nvidia-smi`` on the GPU platform, none on the CPU one unless ``logical_gpus`` says otherwise)
and one service in this process (``services.app.BackgroundService``, which uses that Ray
instance), both stopped in ``finally``. For each worker count, one PES job of STAR on ``nqm``
(no dataset needed) goes through the gRPC API (``services.client.StarClient``) with
``gpus_per_worker`` unset, so the service decides the placement: on a machine with one GPU, N
workers each ask Ray for 1/N of it. The job runs until ``discard`` outer steps are done (actor
start-up, JIT compile), then for ``window_s`` seconds more (and at least ``min_steps`` outer
steps when its time allows), and is cancelled. The rate is the inner steps of the measured outer
steps over the wall time between their METRICS events (``service_scaling.steady``). Also
recorded: ``Job.device`` while the job runs, and the JAX platform each worker reported (the
job's "workers: ..." log line).

Each job gets an equal share of the time left for the part, so a slow start-up of one job
leaves the later ones their time, and the figures are recorded after every job.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

# Outer steps of a job: more than any window needs (the job is cancelled once measured).
JOB_OUTER_STEPS = 100_000
# Seconds kept back from a job's share for its cancel (the learner checkpoints and stops).
CANCEL_S = 10.0
# Seconds of the part kept at its end for stopping the service and Ray.
STOP_S = 10.0
# Object store of the local Ray instance: the service moves theta and small estimates only.
OBJECT_STORE_BYTES = 1 << 30
# The job's log line that names each worker's host and JAX platform, e.g.
# "workers: 0@host(gpu), 1@host(cpu, cores 3)" (services/cluster/placement.describe).
WORKERS_LINE = re.compile(r"(\w+)@[^,(]*\((\w+)")


def count_gpus() -> int | None:
    """NVIDIA GPUs on this machine (``nvidia-smi -L``); None when that cannot be run (Ray then
    detects them itself)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def job_spec(size, num_workers: int):
    """The measured job: PES of STAR on nqm, ``num_workers`` workers, GPUs per worker unset."""
    from services.generated.star.v1 import job_pb2

    spec = job_pb2.JobSpec(
        tasks=["nqm"],
        outer_steps=JOB_OUTER_STEPS,
        num_workers=num_workers,
        checkpoint_interval=JOB_OUTER_STEPS,
        seed=0,
    )
    spec.optimizer.kind = "star"
    spec.estimator.kind = "pes"
    spec.estimator.horizon = size.job_horizon
    spec.estimator.truncation_length = size.job_truncation
    spec.estimator.num_pairs = size.job_pairs
    return spec


def follow(client, job_id: str, size, measure_end: float) -> dict:
    """Follow ``job_id``'s events until its steady window is measured or ``measure_end``;
    the outer steps' arrival times and inner steps, the device, the workers' platforms."""
    from services.client import StarError
    from services.generated.star.v1 import job_pb2

    seen: dict = {"times": [], "inner": [], "rates": [], "device": "", "workers": {}, "seq": 0}
    window_end = None
    events = client.watch(job_id, timeout=max(1.0, measure_end - time.time()))
    try:
        for event in events:
            seen["seq"] = event.seq
            kind = event.WhichOneof("event")
            if kind == "log" and event.log.message.startswith("workers: "):
                seen["workers"] = dict(WORKERS_LINE.findall(event.log.message))
            elif kind == "state_change" and event.state_change.to_state in (
                job_pb2.JOB_STATE_FAILED,
                job_pb2.JOB_STATE_SUCCEEDED,
                job_pb2.JOB_STATE_CANCELLED,
            ):
                seen["ended"] = f"{job_pb2.JobState.Name(event.state_change.to_state)}: "
                seen["ended"] += event.state_change.reason or event.job.error
                break
            elif kind == "metrics":
                metrics = event.metrics.metrics
                seen["times"].append(time.perf_counter())
                seen["inner"].append(metrics.inner_steps_per_second * metrics.outer_step_seconds)
                seen["rates"].append(metrics.inner_steps_per_second)
                seen["device"] = event.job.device
                measured = len(seen["times"]) - size.discard - 1
                if measured == 0:
                    window_end = time.time() + size.window_s
                elif measured >= size.min_steps and window_end and time.time() >= window_end:
                    break
    except StarError as err:
        if err.code != "DEADLINE_EXCEEDED":
            raise
        seen["cut"] = "the job's time share ended before its window"
    finally:
        events.close()  # ends the stream
    return seen


def cancel(client, job_id: str, after_seq: int) -> str:
    """Cancel the job and wait (on its event stream) until it ends; its final state."""
    from services.client import StarError
    from services.generated.star.v1 import job_pb2

    client.cancel(job_id)
    try:
        for _ in client.watch(job_id, after_seq=after_seq, timeout=CANCEL_S):
            pass
    except StarError as err:
        if err.code != "DEADLINE_EXCEEDED":
            raise
    return job_pb2.JobState.Name(client.get_job(job_id).state)


def run_job(client, size, num_workers: int, seconds: float) -> dict:
    """One measured job within ``seconds``; its row."""
    from service_scaling import steady

    t0 = time.perf_counter()
    job = client.submit(job_spec(size, num_workers))
    seen = follow(client, job.job_id, size, time.time() + seconds - CANCEL_S)
    row = {
        "workers": num_workers,
        "job_id": job.job_id,
        "device": seen["device"],
        "worker_platforms": seen["workers"],
        "outer_steps_seen": len(seen["times"]),
    }
    for key in ("ended", "cut"):
        if key in seen:
            row[key] = seen[key]
    if "ended" not in seen:
        row["final_state"] = cancel(client, job.job_id, seen["seq"])
    try:
        row.update(steady(seen["times"], seen["inner"], seen["rates"], size.discard, t0))
    except RuntimeError as err:  # too few outer steps in its time share
        row["error"] = str(err)
    return row


def measure_service(
    size, platform: str, deadline: float, record, logical_gpus: float | None = None
) -> None:
    """See the module docstring; ``record`` gets the figures after every job.
    ``logical_gpus`` (CPU platform): GPUs that Ray announces although the workers compute on
    the CPU, to exercise the service's GPU placement on a machine without one."""
    import ray

    from services.cluster import runtime

    gpus = count_gpus() if platform == "gpu" else (logical_gpus or 0)
    expected = "gpu" if platform == "gpu" or gpus else "cpu"
    figures: dict = {
        "expected_device": expected,
        "expected_worker_platform": "gpu" if platform == "gpu" else "cpu",  # JAX's name
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="star-gpu-service-") as root:
        # Compiled XLA programs shared by the jobs' workers (set before Ray starts, so that
        # the workers inherit it): later jobs start faster; only start-up is affected.
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(Path(root) / "jax-cache")
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, max(size.workers) + 1),
            num_gpus=gpus,
            include_dashboard=False,
            # Learner slots, as the service's own local Ray instance offers them.
            resources={runtime.LEARNER_RESOURCE: runtime.LOCAL_LEARNER_SLOTS},
            object_store_memory=OBJECT_STORE_BYTES,
            namespace="star",
            logging_level="WARNING",
        )
        try:
            figures["ray"] = {"version": ray.__version__, **ray.cluster_resources()}
            record(figures)
            run_jobs(size, Path(root), deadline, figures, record)
        finally:
            ray.shutdown()


def run_jobs(size, root: Path, deadline: float, figures: dict, record) -> None:
    from services.app import BackgroundService, ServiceOptions
    from services.client import StarClient

    service = BackgroundService(
        ServiceOptions(data_dir=root / "service", port=0, max_running=1, run_scheduler=False)
    ).start()
    client = StarClient(service.address)
    try:
        for i, num_workers in enumerate(size.workers):
            seconds = (deadline - STOP_S - time.time()) / (len(size.workers) - i)
            figures["rows"].append(run_job(client, size, num_workers, seconds))
            rates = {r["workers"]: r.get("steps_per_s") for r in figures["rows"]}
            if rates.get(1):
                figures["speedup_over_1_worker"] = {
                    n: rate / rates[1] for n, rate in rates.items() if rate
                }
            record(figures)
    finally:
        client.close()
        service.stop()
