"""Service scaling: inner steps/s through the service (1 and 2 workers) next to ``meta_train``.

Three measurements against one Ray instance that this script starts (``ray.init``, 2 CPUs) and
services on loopback (``services.app.BackgroundService``), all stopped in ``finally``:

1. Throughput. The same PES job (digits_mlp, STAR, horizon 300, truncation 50, 4 pairs per
   worker) submitted through the gRPC API with 1 and with 2 workers, next to single-process
   ``meta_train`` of the same config (``spec_from_proto(spec).config``) in a subprocess: with
   the environment of a service CPU worker (``CPU_WORKER_XLA_FLAGS``, ``OMP_NUM_THREADS=1``),
   with that and the process pinned to one core (CPU affinity set before JAX starts), with
   no flags, and two pinned processes at once on the two cores (what two one-core workers
   could get from the machine with no service in between). Steady state only: the first
   ``--discard`` outer steps (actor start-up, JIT compile) are dropped; the rate is the inner
   steps of the later steps over the wall time between the end of step ``discard`` and the
   last step (WatchJob METRICS events as they arrive; ``meta_train``'s progress callback).
   Also the median per-step rate the learner reports, and where the CPU went over the same
   window (``CpuMeter``: CPU seconds of the workers or the meta_train process, the time their
   threads waited for a CPU, CPU of the learner, of Ray's other processes and of the service
   process). Interleaved rounds (one run of each per round), medians.
   Targets: service 1 worker >= 0.9x meta_train with the worker's flags; 2 workers >= 1.7x 1.
   Then a "floor" job whose estimates cost next to nothing (nqm, 1 pair, truncation 1): the
   wall time of its outer steps is the per-step cost of the learner, Ray and the service.
2. FetchCheckpoint: a 64 MiB file of random bytes written through the service's
   ``CheckpointStore`` and indexed with ``store.add_checkpoint`` (on a PENDING job), fetched
   with ``StarClient.fetch`` on loopback (to a file, sha256-checked); baseline: a local copy of
   the same file with its sha256 (the same disk and hashing work). Target >= 200 MiB/s end to
   end (the raw stream alone is faster: the client also writes, fsyncs and hashes the file).
3. SubmitJob latency under 20 concurrent clients (threads, one StarClient each), on a second
   service with ``max_running=0`` so that submitted jobs stay PENDING and nothing runs during
   the measurement; baseline: GetJob of the job just submitted, by the same clients.

Usage::

    JAX_PLATFORMS=cpu python benchmarks/service_scaling.py            # ~8-12 min on 2 cores
    JAX_PLATFORMS=cpu python benchmarks/service_scaling.py --quick    # ~2-5 min
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_meter import (  # (this folder, next to the script)
    CpuMeter,
    cpu_between,
    cpu_sample,
    machine_jiffies,
    steal_share,
)
from service_calls import measure_fetch, measure_submit

REPO = Path(__file__).resolve().parent.parent
JOB_TIMEOUT_S = 600.0  # seconds one throughput job may take, start-up included
MAX_JOBS = 100_000  # active-job bound of the latency service (its jobs all stay PENDING)
FLOOR_HORIZON = 10  # episode length of the near-free "floor" job (any small value)


def job_spec(args: argparse.Namespace, num_workers: int, floor: bool = False):
    """The benchmark's PES job; ``floor``: a job whose estimates cost next to nothing (nqm,
    one pair, truncation 1), to time the per-outer-step cost of everything else."""
    from services.generated.star.v1 import job_pb2

    steps = args.floor_steps if floor else args.outer_steps
    spec = job_pb2.JobSpec(
        tasks=["nqm" if floor else "digits_mlp"],
        outer_steps=steps,
        num_workers=num_workers,
        checkpoint_interval=steps,
        seed=0,
        gpus_per_worker=0.0,
    )
    spec.estimator.kind = "pes"
    spec.estimator.horizon = FLOOR_HORIZON if floor else args.horizon
    spec.estimator.truncation_length = 1 if floor else args.truncation
    spec.estimator.num_pairs = 1 if floor else args.pairs
    return spec


def steady(
    times: list[float], inner: list[float], rates: list[float], discard: int, t0: float
) -> dict:
    """Steady-state figures of a run from the end time and inner steps of every outer step
    (``t0``: when the run was started)."""
    if len(times) <= discard + 1:
        raise RuntimeError(f"only {len(times)} outer steps; need more than {discard + 1}")
    seconds = times[-1] - times[discard]
    walls = [b - a for a, b in itertools.pairwise(times[discard:])]
    return {
        "steps_per_s": sum(inner[discard + 1 :]) / seconds,
        "median_step_wall": statistics.median(walls),
        "median_step_rate": statistics.median(rates[discard + 1 :]),
        "measured_steps": len(times) - discard - 1,
        "seconds": seconds,
        "inner_steps": sum(inner[discard + 1 :]),
        "startup_s": times[discard] - t0,
    }


# -- single process ----------------------------------------------------------------------------


def child_main(config_json: str) -> None:
    """Run ``meta_train`` of the config; print every step's (time, inner steps, rate, CPU
    seconds of the process) as JSON."""
    from star_core.training.config import MetaTrainConfig
    from star_core.training.loop import meta_train

    config = MetaTrainConfig.from_dict(json.loads(config_json))
    steps: list[list[float]] = []

    def progress(step: int, record: dict) -> None:
        inner = float(record["inner_steps"])
        steps.append([time.perf_counter(), inner, inner / record["seconds"], cpu_sample()])

    with tempfile.TemporaryDirectory() as out_dir:
        meta_train(config, out_dir, progress=progress)
    print(json.dumps(steps))


WORKER_FLAGS, PINNED, NO_FLAGS = "worker XLA flags", "pinned to 1 core", "no flags"


def single_process(config_json: str, mode: str, discard: int, copies: int = 1) -> dict:
    """Steady-state figures of ``meta_train`` in a fresh subprocess. ``mode``: WORKER_FLAGS
    (the environment of a service CPU worker: CPU_WORKER_XLA_FLAGS, and OMP_NUM_THREADS=1 as
    Ray sets it for a 1-CPU actor), PINNED (that, and the process's CPU affinity set to one
    core before JAX starts) or NO_FLAGS. ``copies`` processes run at once (pinned to different
    cores): their figures are summed."""
    from services.cluster.placement import CPU_WORKER_XLA_FLAGS

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    if mode != NO_FLAGS:
        env.update(XLA_FLAGS=CPU_WORKER_XLA_FLAGS, OMP_NUM_THREADS="1")
    cores = sorted(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                config_json,
                *(["--pin", str(cores[i % len(cores)])] if mode == PINNED else []),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(copies)
    ]
    rows = [child_result(proc, discard, t0) for proc in procs]
    total = dict(rows[0])
    for key in ("steps_per_s", "median_step_rate", "inner_steps"):
        total[key] = sum(row[key] for row in rows)
    total["seconds"] = statistics.mean(row["seconds"] for row in rows)
    total["cpu"] = {k: sum(row["cpu"][k] for row in rows) for k in rows[0]["cpu"]}
    return total


def child_result(proc: subprocess.Popen, discard: int, t0: float) -> dict:
    try:
        out, err = proc.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        proc.kill()  # a no-op once it has ended
    if proc.returncode:
        raise RuntimeError(f"meta_train subprocess failed: {err[-2000:]}")
    times, inner, rates, cpu = zip(*json.loads(out.strip().splitlines()[-1]), strict=True)
    row = steady(list(times), list(inner), list(rates), discard, t0)
    run, wait = cpu_between(cpu[discard], cpu[-1])
    row["cpu"] = {"compute": run, "compute_wait": wait}
    return row


# -- through the service -----------------------------------------------------------------------


def service_job(client, spec, discard: int) -> dict:
    """Submit ``spec``, follow its METRICS events to the end; steady-state figures and the CPU
    seconds of the service's processes over the same window."""
    from services.generated.star.v1 import job_pb2

    t0 = time.perf_counter()
    job = client.submit(spec)
    times, inner, rates, meter = [], [], [], CpuMeter()
    for event in client.watch(job.job_id, timeout=JOB_TIMEOUT_S):
        if event.WhichOneof("event") == "metrics":
            metrics = event.metrics.metrics
            times.append(time.perf_counter())
            inner.append(metrics.inner_steps_per_second * metrics.outer_step_seconds)
            rates.append(metrics.inner_steps_per_second)
            if len(times) == discard + 1:
                meter.start()
            elif len(times) > discard + 1:
                meter.read()
    final = client.get_job(job.job_id)
    if final.state != job_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job {job.job_id} ended {final.state}: {final.error}")
    row = steady(times, inner, rates, discard, t0)
    row["cpu"] = meter.by_group()
    return row


def derived(row: dict) -> dict[str, float]:
    """Per-run figures: cores the compute processes (workers / the meta_train process) ran on
    and the cores' worth of time their threads waited for one (CPU contention), inner steps
    per CPU second, other processes' CPU ms per outer step."""
    cpu, seconds, steps = row["cpu"], row["seconds"], row["measured_steps"]
    out = {
        "steps/s": row["steps_per_s"],
        "median step rate": row["median_step_rate"],
        "compute cores": cpu["compute"] / seconds,
        "waiting cores": cpu["compute_wait"] / seconds,
        "steps per CPU-s": row["inner_steps"] / cpu["compute"],
    }
    for group in ("learner", "ray", "service"):
        if group in cpu:
            out[f"{group} ms/step"] = 1e3 * cpu[group] / steps
    return out


def measure_throughput(client, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Interleaved rounds (one run of each kind per round, the runs that are compared next to
    each other); every run's figures by kind."""
    from services.api.convert import spec_from_proto

    config_json = json.dumps(spec_from_proto(job_spec(args, 1)).config.to_dict())
    single = functools.partial(single_process, config_json, discard=args.discard)
    runs = {
        f"meta_train, {WORKER_FLAGS}": functools.partial(single, WORKER_FLAGS),
        "service, 1 worker": lambda: service_job(client, job_spec(args, 1), args.discard),
        "service, 2 workers": lambda: service_job(client, job_spec(args, 2), args.discard),
        f"2 x meta_train at once, {PINNED} each": functools.partial(single, PINNED, copies=2),
        f"meta_train, {PINNED}": functools.partial(single, PINNED),
        f"meta_train, {NO_FLAGS}": functools.partial(single, NO_FLAGS),
    }
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name, run in runs.items():
            before = machine_jiffies()
            row = run()
            steal = steal_share(before, machine_jiffies())
            results[name].append(derived(row))
            figures = ", ".join(
                f"{k} {v:.2f}" if v < 10 else f"{k} {v:.0f}" for k, v in results[name][-1].items()
            )
            print(
                f"  round {round_ + 1} {name}: {figures} ({row['measured_steps']} steps in "
                f"{row['seconds']:.1f} s after {row['startup_s']:.0f} s of start-up; load "
                f"{os.getloadavg()[0]:.1f}, steal {steal:.0%})",
                flush=True,
            )
    return results


def measure_floor(client, args: argparse.Namespace) -> None:
    """Median wall time of an outer step whose estimate costs next to nothing."""
    from services.api.convert import spec_from_proto

    spec = job_spec(args, 1, floor=True)
    config_json = json.dumps(spec_from_proto(spec).config.to_dict())
    discard = args.floor_steps // 5
    rows = {
        f"meta_train, {WORKER_FLAGS}": single_process(config_json, WORKER_FLAGS, discard),
        "service, 1 worker": service_job(client, spec, discard),
    }
    print(
        "| floor job (nqm, 1 pair, K = 1) | median wall ms per outer step | CPU ms per outer"
        " step (compute; learner, ray, service) |\n|---|---:|---|"
    )
    for name, row in rows.items():
        cpu = ", ".join(
            f"{k} {1e3 * v / row['measured_steps']:.1f}"
            for k, v in row["cpu"].items()
            if k != "compute_wait"
        )
        print(f"| {name} | {1e3 * row['median_step_wall']:.1f} | {cpu} |", flush=True)


def report_throughput(results: dict[str, list[dict]]) -> None:
    """Medians over rounds, as a Markdown table, and the two target ratios."""
    columns = list(dict.fromkeys(k for rows in results.values() for r in rows for k in r))
    med = {
        name: {
            k: statistics.median(r[k] for r in rows if k in r)
            for k in columns
            if any(k in r for r in rows)
        }
        for name, rows in results.items()
    }
    base = med[f"meta_train, {WORKER_FLAGS}"]["steps/s"]
    print(f"| run | {' | '.join(columns)} | x meta_train ({WORKER_FLAGS}) |")
    print("|---" + "|---:" * (len(columns) + 1) + "|")
    for name, figures in med.items():
        cells = [
            f"{figures[k]:.2f}"
            if k in figures and figures[k] < 10
            else f"{figures[k]:.0f}"
            if k in figures
            else "-"
            for k in columns
        ]
        print(f"| {name} | {' | '.join(cells)} | {figures['steps/s'] / base:.2f} |")
    ratio(
        "service, 1 worker",
        f"meta_train, {WORKER_FLAGS}",
        results,
        0.9,
        "service at 1 worker / meta_train with the worker's flags",
    )
    ratio(
        "service, 1 worker",
        f"meta_train, {PINNED}",
        results,
        0.9,
        "service at 1 worker / meta_train pinned to one core",
    )
    ratio("service, 2 workers", "service, 1 worker", results, 1.7, "service: 2 workers / 1 worker")
    ratio(
        f"2 x meta_train at once, {PINNED} each",
        f"meta_train, {PINNED}",
        results,
        1.7,
        "no service: 2 one-core meta_train processes at once / 1 (what the machine gives)",
    )


def ratio(top: str, bottom: str, results: dict[str, list[dict]], target: float, label: str) -> None:
    """Print the ratio of two runs' steps/s: the median of the per-round ratios (the runs of one
    round follow each other within a minute or two, so a change of the machine's load hits them
    more alike than runs of different rounds), and the ratio of the medians."""
    per_round = [
        a["steps/s"] / b["steps/s"] for a, b in zip(results[top], results[bottom], strict=True)
    ]
    headline = statistics.median(per_round)
    of_medians = statistics.median(r["steps/s"] for r in results[top]) / statistics.median(
        r["steps/s"] for r in results[bottom]
    )
    print(
        f"{label}: {headline:.2f} (median of rounds {', '.join(f'{r:.2f}' for r in per_round)}"
        f"; ratio of medians {of_medians:.2f}); target >= {target}: "
        f"{'met' if headline >= target else 'missed'}"
    )


# -- main --------------------------------------------------------------------------------------

QUICK = {
    "rounds": 1,
    "outer_steps": 20,
    "discard": 4,
    "floor_steps": 60,
    "fetch_repeats": 3,
    "submits": 5,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"shorter defaults: {', '.join(f'{k}={v}' for k, v in QUICK.items())}",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    parser.add_argument("--outer-steps", type=int, default=30)
    parser.add_argument("--discard", type=int, default=5, help="start-up outer steps dropped")
    parser.add_argument("--horizon", type=int, default=300)
    parser.add_argument("--truncation", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=4, help="antithetic pairs per worker")
    parser.add_argument("--floor-steps", type=int, default=150, help="outer steps of the floor job")
    parser.add_argument("--fetch-mib", type=int, default=64)
    parser.add_argument("--fetch-repeats", type=int, default=7)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--submits", type=int, default=10, help="SubmitJob calls per client")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # config JSON: run meta_train
    parser.add_argument("--pin", type=int, help=argparse.SUPPRESS)  # the child's one core
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)  # flags given explicitly still win
    return parser.parse_args(argv)


def machine() -> str:
    import grpc
    import jax
    import ray

    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return (
        f"{cpu}, {os.cpu_count()} cores visible, jax {jax.__version__}, "
        f"ray {ray.__version__}, grpcio {grpc.__version__}"
    )


def run_all(args: argparse.Namespace, data_root: Path) -> None:
    from services.app import BackgroundService, ServiceOptions
    from services.client import StarClient

    services, clients = [], []
    try:
        runner = BackgroundService(
            ServiceOptions(data_dir=data_root / "run", port=0, max_running=1, run_scheduler=False)
        )
        services.append(runner.start())
        idle = BackgroundService(
            ServiceOptions(
                data_dir=data_root / "idle",
                port=0,
                max_running=0,
                max_jobs=MAX_JOBS,
                run_scheduler=False,
            )
        )
        services.append(idle.start())
        client, idle_client = StarClient(runner.address), StarClient(idle.address)
        clients += [client, idle_client]
        if not args.skip_throughput:
            print("\n## throughput", flush=True)
            report_throughput(measure_throughput(client, args))
            print("\n## per-outer-step floor", flush=True)
            measure_floor(client, args)
        print("\n## FetchCheckpoint", flush=True)
        measure_fetch(idle, idle_client, job_spec(args, 1), args.fetch_mib, args.fetch_repeats)
        print("\n## SubmitJob latency", flush=True)
        job_ids = measure_submit(idle.address, job_spec(args, 1), args.clients, args.submits)
        for job_id in job_ids:
            idle_client.cancel(job_id)
    finally:
        for open_client in clients:
            open_client.close()
        for service in reversed(services):
            try:
                service.stop()
            except Exception as err:  # stop the others all the same
                print(f"stopping a service: {err!r}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child:
        if args.pin is not None:  # before JAX starts: XLA sizes its thread pool by it
            os.sched_setaffinity(0, {args.pin})
        child_main(args.child)
        return
    with tempfile.TemporaryDirectory(prefix="star-scaling-") as data_root:
        # A persistent JAX compilation cache, inherited by the meta_train subprocesses and (set
        # before Ray starts) by the worker actors: rounds after the first skip most of the
        # compile. It shortens the start-up only, which the figures exclude anyway.
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(Path(data_root) / "jax-cache")
        import ray

        ray.init(num_cpus=2, include_dashboard=False, namespace="star", logging_level="WARNING")
        try:
            print(
                f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start", flush=True
            )
            run_all(args, Path(data_root))
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
