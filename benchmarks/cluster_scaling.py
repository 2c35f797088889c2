"""Cluster scaling: what the learner, Ray and the service add per outer step, up to 64 workers.

A multi-node Ray cluster on this machine (``tests/cluster/local_cluster.py``: a head with no
CPUs and ``--nodes`` worker nodes, each ``ray start`` offering ``--cpus-per-node`` CPUs, more
than the machine has; no pinning), and an in-process service joined to it
(``BackgroundService(ServiceOptions(ray_address=..., worker_class=...))``) whose workers are
``sleep_worker.SleepingWorker``: each estimate sleeps a set time and costs no CPU, so anything
below perfect scaling is what the learner, Ray and the service add.

Sections (``--skip`` any of them):

- ``apply`` and ``loop`` (``learner_loop.py``): the learner's own costs apart from the service,
  each next to the former code in the same run;
- ``scaling``: for each estimate cost (``--costs``, 0.25 s and 2 s) and N in ``--workers``
  (1 .. 64), a job submitted through the gRPC API and followed with WatchJob, then N = 1 again.
  Throughput = estimates averaged per second over the steady state: the first ``--discard``
  outer steps (actor start-up) dropped, then the estimates of the next steps over the wall time
  between their METRICS events. efficiency(N) = throughput(N) / (N x throughput(1)), with the
  better of the two N = 1 jobs. Targets at 64 workers: >= 0.9 for 2 s estimates, >= 0.8 for
  0.25 s. Next to it, over the same window: CPU ms per outer step of the learner, the workers,
  Ray's other processes (by program) and the service process (``cluster_meter.py``); after
  it, for the largest N, a py-spy profile of the learner (``learner_profile.py``): the per-step
  cost breakdown (waiting for estimates, submitting, fetching, averaging, events);
- ``stragglers`` (``--straggler-workers`` N, cost 0.25 s, ``--straggler-rounds`` interleaved
  rounds): no slow worker, with ``estimates_per_step`` N and N - 1; one worker 5x slower with
  N, N - 1 (and ``max_staleness`` = its lag) and N - 2.

Writes ``cluster_scaling.json`` and ``cluster_scaling.png`` (efficiency vs N per cost) under
``--out``. Every process it starts is stopped in ``finally`` (by process group and session).
Results and their reading: benchmarks/README.md, "Cluster scaling".

Usage::

    JAX_PLATFORMS=cpu python benchmarks/cluster_scaling.py --out /tmp/scaling          # ~35 min
    JAX_PLATFORMS=cpu python benchmarks/cluster_scaling.py --quick --out /tmp/scaling  # ~10 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.cluster.local_cluster

import learner_loop  # noqa: E402 (this folder, next to the script)
from cluster_meter import Meter, descendants_pss_mb, learner_pid  # noqa: E402
from scaling_report import plot, print_row, report  # noqa: E402

SLOW_FACTOR = 5.0  # the straggler's estimates take this many times the others'
JOB_TIMEOUT_S = 900.0  # seconds one job may take, start-up included
# Memory one worker actor process takes (measured: ~70-90 MB RSS without JAX), with margin.
WORKER_MEMORY_MB = 120
MEMORY_MARGIN_MB = 1500  # free memory kept for everything else on the shared machine
NODE_ATTEMPTS = 3  # starts of one ray node before the benchmark gives up


def job_spec(
    num_workers: int, outer_steps: int, batch: int | None = None, max_staleness: int | None = None
):
    """A job whose estimates are the sleeping worker's (the task only shapes the learner)."""
    from services.generated.star.v1 import job_pb2

    spec = job_pb2.JobSpec(
        tasks=["nqm"],
        outer_steps=outer_steps,
        num_workers=num_workers,
        checkpoint_interval=outer_steps,
        seed=0,
        gpus_per_worker=0.0,
    )
    spec.estimator.kind = "pes"
    spec.estimator.truncation_length = 1
    spec.estimator.horizon = 10
    spec.estimator.num_pairs = 1
    if batch is not None:
        spec.estimates_per_step = batch
    if max_staleness is not None:
        spec.max_staleness = max_staleness
    return spec


def run_job(client, spec, discard: int, measured: int, out: Path, profile_s: float = 0) -> dict:
    """Submit ``spec`` and follow it to the end: steady-state throughput, CPU per step, and
    (``profile_s`` > 0) the learner's profile over the steps after the measured ones."""
    import learner_profile

    from services.generated.star.v1 import job_pb2

    t0 = time.perf_counter()
    job = client.submit(spec)
    times, estimates, walls, meter, sampler = [], [], [], Meter(), None
    profile_file = out / f"profile-{job.job_id}.txt"
    for event in client.watch(job.job_id, timeout=JOB_TIMEOUT_S):
        if event.WhichOneof("event") != "metrics":
            continue
        times.append(time.perf_counter())
        estimates.append(event.metrics.metrics.extra["estimates"])
        walls.append(event.metrics.metrics.outer_step_seconds)
        if len(times) == discard + 1:
            meter.start()
            load, pss = os.getloadavg()[0], descendants_pss_mb()
        elif len(times) == discard + measured + 1:
            meter.read()
            pid = learner_pid()
            if profile_s and pid:
                sampler = learner_profile.start(pid, profile_s, profile_file)
    final = client.get_job(job.job_id)
    if final.state != job_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job {job.job_id} ended {final.state}: {final.error}")
    if len(times) < discard + measured + 1:
        raise RuntimeError(f"job {job.job_id}: {len(times)} METRICS events, too few")
    end = discard + measured
    seconds = times[end] - times[discard]
    cpu = meter.by_group()
    row = {
        "estimates_per_s": sum(estimates[discard + 1 : end + 1]) / seconds,
        "step_s": seconds / measured,
        "learner_step_s": sorted(walls[discard + 1 : end + 1])[measured // 2],
        "step_walls_s": [
            round(b - a, 4)
            for a, b in zip(times[discard:end], times[discard + 1 : end + 1], strict=True)
        ],
        "learner_walls_s": [round(w, 4) for w in walls[discard + 1 : end + 1]],
        "startup_s": times[discard] - t0,
        "cpu_ms_per_step": {
            ("workers" if k == "compute" else k): 1e3 * v / measured
            for k, v in cpu.items()
            if k != "compute_wait"
        },
        "ray_cpu_ms_per_step": {k: 1e3 * v / measured for k, v in meter.by_kind().items()},
        "load": [load, os.getloadavg()[0]],
        "worker_restarts": final.metrics.worker_restarts,
        "stale_dropped": final.metrics.stale_dropped,
        "pss_mb": pss,
    }
    if sampler is not None:
        row["profile"] = learner_profile.finish(sampler, profile_file, profile_s + 60)
    return row


class Service:
    """An in-process service joined to the cluster, with ``worker_class`` as its workers."""

    def __init__(self, cluster, data_dir: Path, worker_class: type):
        from services.app import BackgroundService, ServiceOptions

        options = ServiceOptions(
            data_dir=data_dir,
            port=0,
            ray_address=cluster.address,
            max_running=1,
            run_scheduler=False,
            worker_class=worker_class,
        )
        self.service = BackgroundService(options)

    def __enter__(self):
        from services.client import StarClient

        self.service.start()
        self.client = StarClient(self.service.address)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.service.stop()


def enough_memory(workers: int) -> bool:
    import psutil

    free_mb = psutil.virtual_memory().available / 2**20
    need = workers * WORKER_MEMORY_MB + MEMORY_MARGIN_MB
    print(f"  N = {workers}: {free_mb:.0f} MB of memory available", flush=True)
    if free_mb < need:
        print(f"  skipping N = {workers}: {free_mb:.0f} MB free, {need} MB needed", flush=True)
        return False
    return True


def measure_scaling(cluster, args, out: Path) -> dict:
    """Per estimate cost, a job per N (the largest one profiled after its measured steps), then
    N = 1 again: throughput(1) is the better of the two (the load of the machine changes over
    a sweep; the better one is the cost with the least of it, and gives the lower efficiency)."""
    from sleep_worker import sleeping_worker

    results: dict = {}
    for cost in args.costs:
        discard, measured = args.discard, max(args.min_steps, round(args.window_s / cost))
        extra = max(2, round(args.profile_s / cost)) if args.profile_s else 0
        rows = results.setdefault(str(cost), {})
        with Service(cluster, args.work / f"data-{cost}", sleeping_worker(cost)) as client:
            print(f"estimate cost {cost} s ({measured} outer steps measured):", flush=True)
            for n in [*args.workers, 1]:
                if not enough_memory(n):
                    continue
                last = n == max(args.workers)
                steps = discard + measured + (extra if last else 0) + 1
                spec = job_spec(n, steps)
                row = run_job(client, spec, discard, measured, out, args.profile_s if last else 0)
                row["of_ideal"] = row["estimates_per_s"] * cost / n
                if str(n) in rows:
                    rows[str(n)]["again"] = row
                else:
                    rows[str(n)] = row
                print_row(f"N = {n} ({row['of_ideal']:.2f} of N / cost)", row)
        base = max(
            rows["1"]["estimates_per_s"], rows["1"].get("again", {}).get("estimates_per_s", 0)
        )
        for n, row in rows.items():
            row["efficiency"] = row["estimates_per_s"] / (int(n) * base)
    return results


def measure_learner_loop(cluster, args) -> list[dict]:
    """``learner_loop.measure_loop`` with stand-in workers whose estimates cost nothing (Ray is
    joined through a service, which stays idle meanwhile)."""
    from sleep_worker import sleeping_worker

    print(f"the learner's loop alone, {args.loop_workers} workers, estimates cost 0:", flush=True)
    with Service(cluster, args.work / "data-loop", sleeping_worker(0.0)):
        return learner_loop.measure_loop(
            sleeping_worker(0.0), args.loop_workers, args.loop_rounds, Meter
        )


def measure_stragglers(cluster, args, out: Path) -> dict:
    """The straggler runs (see the module docstring), ``--straggler-rounds`` times each,
    interleaved; each run's throughput relative to the no-straggler run of its round."""
    from sleep_worker import sleeping_worker

    n, cost = args.straggler_workers, args.straggler_cost
    measured = max(args.min_steps, round(args.window_s / cost))
    steps = args.discard + measured + 1
    slow = sleeping_worker(cost, 0, SLOW_FACTOR)
    lag = math.ceil(SLOW_FACTOR)  # outer steps a slow estimate lags behind
    runs = {  # label -> (worker class, estimates_per_step, max_staleness)
        "no straggler": (sleeping_worker(cost), None, None),
        "no straggler, estimates_per_step = N - 1": (sleeping_worker(cost), n - 1, None),
        "one worker 5x slower": (slow, None, None),
        "one worker 5x slower, estimates_per_step = N - 1": (slow, n - 1, None),
        f"one worker 5x slower, N - 1, max_staleness = {lag}": (slow, n - 1, lag),
        "one worker 5x slower, estimates_per_step = N - 2": (slow, n - 2, None),
    }
    print(f"stragglers: N = {n}, estimate cost {cost} s:", flush=True)
    rows: dict[str, list[dict]] = {label: [] for label in runs}
    for round_ in range(args.straggler_rounds):
        for i, (label, (worker_class, batch, staleness)) in enumerate(runs.items()):
            spec = job_spec(n, steps, batch, staleness)
            data_dir = args.work / f"data-straggler-{round_}-{i}"
            with Service(cluster, data_dir, worker_class) as client:
                row = run_job(client, spec, args.discard, measured, out)
            if label == "no straggler":
                baseline = row["estimates_per_s"]
            row["vs no straggler"] = row["estimates_per_s"] / baseline
            rows[label].append(row)
            print_row(f"round {round_ + 1}, {label} ({row['vs no straggler']:.2f}x)", row)
    for label, runs_of in rows.items():
        ratios = ", ".join(f"{r['vs no straggler']:.2f}" for r in runs_of)
        median = statistics.median(r["vs no straggler"] for r in runs_of)
        print(f"{label}: {median:.2f}x the job without a straggler (rounds: {ratios})")
    return rows


SECTIONS = ("apply", "loop", "scaling", "stragglers")
QUICK = {
    "window_s": 4.0,
    "min_steps": 3,
    "discard": 2,
    "profile_s": 3.0,
    "workers": [1, 4, 16, 64],
    "loop_rounds": 8,
    "repeats": 3,
    "straggler_rounds": 1,
}
APPLY_SIZES = [203, 1 << 14, 1 << 18, 1 << 20]  # theta elements (203: STAR's own theta)
APPLY_COUNTS = [1, 8, 64, 256]  # estimates per outer step


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for JSON, PNG, profiles")
    parser.add_argument("--quick", action="store_true", help=f"shorter defaults: {QUICK}")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--costs", type=float, nargs="+", default=[0.25, 2.0])
    parser.add_argument("--window-s", type=float, default=16.0, help="measured seconds per job")
    parser.add_argument("--min-steps", type=int, default=8, help="measured outer steps, at least")
    parser.add_argument("--discard", type=int, default=3, help="start-up outer steps dropped")
    parser.add_argument("--profile-s", type=float, default=8.0, help="py-spy seconds (0: none)")
    parser.add_argument("--nodes", type=int, default=4, help="worker nodes of the cluster")
    parser.add_argument("--cpus-per-node", type=int, default=16)
    parser.add_argument("--straggler-workers", type=int, default=16)
    parser.add_argument("--straggler-cost", type=float, default=0.25)
    parser.add_argument("--straggler-rounds", type=int, default=2)
    parser.add_argument("--loop-workers", type=int, default=64, help="workers of the loop test")
    parser.add_argument("--loop-rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timings per apply figure")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if 1 not in args.workers:
        parser.error("--workers must include 1 (the baseline of the efficiency)")
    args.workers = sorted(set(args.workers))
    return args


def start_node(cluster, name: str, cpus: int) -> None:
    """Add a worker node and wait for it, one at a time: ``ray start`` gives up when its raylet
    has not registered within 30 s, which several nodes starting together on a loaded 2-core
    machine overrun. A node that gave up is stopped and started again."""
    for attempt in range(NODE_ATTEMPTS):
        cluster.add_node(name, num_cpus=cpus)
        try:
            cluster.wait_for_nodes({"head", name})
            return
        except AssertionError as err:
            print(f"  node {name} did not start (attempt {attempt + 1}): {str(err)[-200:]}")
            cluster.kill_node(name)
    raise RuntimeError(f"node {name} did not start in {NODE_ATTEMPTS} attempts")


def join_environment(token_path: Path) -> None:
    """This process joins the cluster as a driver: its token, no inherited Ray address."""
    for name in [k for k in os.environ if k.startswith("RAY_")]:
        del os.environ[name]
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv: list[str] | None = None) -> None:
    from tests.cluster.local_cluster import LocalRayCluster

    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.work = Path(tempfile.mkdtemp(prefix="star-scaling-"))
    temp_root = Path(tempfile.mkdtemp(prefix="star-ray-", dir="/tmp"))
    cluster = LocalRayCluster(root, temp_root)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        join_environment(cluster.token_path)  # before anything imports Ray
        cluster.start()
        for i in range(args.nodes):
            start_node(cluster, f"n{i}", args.cpus_per_node)
        print(
            f"cluster: head + {args.nodes} nodes x {args.cpus_per_node} CPUs; machine "
            f"{os.cpu_count()} cores, load {os.getloadavg()}",
            flush=True,
        )
        if "apply" not in args.skip:
            results["apply"] = learner_loop.measure_apply(APPLY_SIZES, APPLY_COUNTS, args.repeats)
        if "loop" not in args.skip:
            results["loop"] = measure_learner_loop(cluster, args)
        if "scaling" not in args.skip:
            results["scaling"] = measure_scaling(cluster, args, args.out)
            report(results["scaling"], args)
            plot(results["scaling"], args.out / "cluster_scaling.png")
        if "stragglers" not in args.skip:
            results["stragglers"] = measure_stragglers(cluster, args, args.out)
    finally:
        (args.out / "cluster_scaling.json").write_text(json.dumps(results, indent=1))
        leftovers = cluster.stop()
        shutil.rmtree(temp_root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        if leftovers:
            print(f"processes outlived the cluster (killed): {leftovers}")


if __name__ == "__main__":
    main()
