"""Job start-up: how long a short job takes from SubmitJob to SUCCEEDED, with and without the
compilation cache that ``star serve``'s local Ray instance gives its processes.

Every job starts new processes (its learner and workers are Ray actors of their own), and each
imports JAX and compiles the job's functions: on a short job that is most of its wall time.
``services.cluster.runtime.compilation_cache_env`` points a local instance's processes at JAX's
persistent compilation cache in ``<data-dir>/jax-cache``, every computation cached.

Each *run* is a child process (this script with ``--child``) that starts a service as ``star
serve`` does (``BackgroundService``: its own local Ray instance of 2 CPUs, SQLite, gRPC on
loopback, a fresh data directory), submits ``--jobs`` short jobs one after the other and stops
it all in ``finally``. ``cache``: the service's default (the cache starts empty in the fresh
data directory, so the first job fills it); ``no cache``: the same with
``JAX_COMPILATION_CACHE_MAX_SIZE=0`` (JAX caches nothing). Runs alternate between the two,
``--rounds`` of each. Per job, from its events: learner start (RUNNING to the learner's first
log line), workers start (to the workers' placement line), first outer step (to the first
metrics event) and the total. Reported: the first job of a run (cold) and the median of the
later ones (warm), and the ratio no cache / cache of the warm totals, per round and median.

The job: ``--task`` (nqm by default: its compile is small, so this is the floor of the gain;
digits_mlp compiles an MLP), PES with truncation 3, horizon 9 and 2 pairs per worker, 2
workers, 2 outer steps.

Usage::

    JAX_PLATFORMS=cpu python benchmarks/job_startup.py              # ~5-7 min on 2 cores
    JAX_PLATFORMS=cpu python benchmarks/job_startup.py --task digits_mlp --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("no cache", "cache")
PHASES = ("learner", "workers", "first_step", "total")
JOB_TIMEOUT_S = 600.0
# The environment variables of JAX's persistent cache (prefixes), the service's to set.
CACHE_VARIABLES = ("JAX_COMPILATION_CACHE_", "JAX_PERSISTENT_CACHE_")


def job_spec(task: str, workers: int, steps: int):
    from services.generated.star.v1 import job_pb2

    spec = job_pb2.JobSpec(
        tasks=[task], outer_steps=steps, num_workers=workers, checkpoint_interval=steps, seed=0
    )
    spec.estimator.kind = "pes"
    spec.estimator.truncation_length = 3
    spec.estimator.horizon = 9
    spec.estimator.num_pairs = 2
    return spec


def timed_job(client, spec) -> dict[str, float]:
    """Seconds from submission to each phase's end (see the module docstring)."""
    from services.generated.star.v1 import job_pb2

    start = time.perf_counter()
    job = client.submit(spec)
    marks: dict[str, float] = {}
    running = None
    for event in client.watch(job.job_id, timeout=JOB_TIMEOUT_S):
        now = time.perf_counter() - start
        kind = event.WhichOneof("event")
        if kind == "state_change" and event.state_change.to_state == job_pb2.JOB_STATE_RUNNING:
            running = now
        elif kind == "log" and event.log.message.startswith("starting "):
            marks.setdefault("learner", now - (running or 0.0))
        elif kind == "log" and event.log.message.startswith("workers: "):
            marks.setdefault("workers", now - (running or 0.0) - marks.get("learner", 0.0))
        elif kind == "metrics":
            marks.setdefault(
                "first_step",
                now - (running or 0.0) - marks.get("learner", 0.0) - marks.get("workers", 0.0),
            )
    marks["total"] = time.perf_counter() - start
    final = client.get_job(job.job_id)
    if final.state != job_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job {job.job_id} ended {final.state}: {final.error}")
    return marks


def child(args: argparse.Namespace) -> None:
    """One run: a service of its own, ``--jobs`` jobs; prints one JSON line of their phases."""
    from services.app import BackgroundService, ServiceOptions
    from services.client import StarClient

    data_dir = Path(tempfile.mkdtemp(prefix="star-startup-"))
    service = BackgroundService(ServiceOptions(data_dir=data_dir, port=0, num_cpus=2))
    service.start()
    try:
        with StarClient(service.address) as client:
            spec = job_spec(args.task, args.workers, args.steps)
            jobs = [timed_job(client, spec) for _ in range(args.jobs)]
    finally:
        service.stop()
    print(json.dumps({"jobs": jobs}), flush=True)


def run(mode: str, args: argparse.Namespace, root: Path) -> list[dict[str, float]]:
    """The jobs of one child run in ``mode``; the service's defaults unless told otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CACHE_VARIABLES)}
    if mode == "no cache":
        env["JAX_COMPILATION_CACHE_MAX_SIZE"] = "0"
    env["TMPDIR"] = str(root)
    argv = [sys.executable, __file__, "--child", "--task", args.task, "--jobs", str(args.jobs)]
    argv += ["--workers", str(args.workers), "--steps", str(args.steps)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["jobs"]


def summary(jobs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    warm = jobs[1:]
    return {
        "cold": jobs[0],
        "warm": {phase: statistics.median(j[phase] for j in warm) for phase in PHASES},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="nqm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3, help="jobs per run (>= 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 2:
        parser.error("--jobs must be at least 2 (the first job of a run is the cold one)")
    if args.child:
        child(args)
        return
    print(f"job start-up: {args.task}, {args.workers} workers, {args.steps} outer steps;")
    print(f"{args.rounds} rounds of one run per mode, {args.jobs} jobs per run, seconds")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="star-startup-") as root:
        for round_ in range(1, args.rounds + 1):
            totals = {}
            for mode in MODES:
                result = summary(run(mode, args, Path(root)))
                totals[mode] = result["warm"]["total"]
                for which in ("cold", "warm"):
                    cells = "  ".join(f"{p} {result[which][p]:5.1f}" for p in PHASES)
                    print(f"round {round_}  {mode:8s}  {which}:  {cells}", flush=True)
            ratios.append(totals["no cache"] / totals["cache"])
            print(f"round {round_}  warm total, no cache / cache: {ratios[-1]:.2f}", flush=True)
    print(f"median over rounds, warm total no cache / cache: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
