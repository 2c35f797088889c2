"""Service scaling: inner steps/s through the service (1 and 2 workers) next to ``meta_train``.

Three measurements against one Ray instance that this script starts (``ray.init``, 2 CPUs) and
services on loopback (``services.app.BackgroundService``), all stopped in ``finally``:

1. Throughput. The same PES job (digits_mlp, STAR, horizon 300, truncation 50, 4 pairs per
   worker) submitted through the gRPC API with 1 and with 2 workers (each CPU worker claims a
   core of its own and pins itself to it before JAX starts: ``services.cluster.cores``), next
   to the same config (``spec_from_proto(spec).config``) run in one process: a plain
   ``star train`` (the ``star`` command in a subprocess, unpinned, as a user runs it), single-
   process ``meta_train`` in a subprocess with the environment of a service CPU worker
   (``CPU_WORKER_XLA_FLAGS``, ``OMP_NUM_THREADS=1``, CPU affinity set to one core before JAX
   starts), and two such pinned processes at once on the two cores (what two one-core workers
   can get from the machine with no service in between). Steady state only: the first
   ``--discard`` outer steps (actor start-up, JIT compile) are dropped; the rate is the inner
   steps of the later steps over the wall time between the end of step ``discard`` and the
   last step (WatchJob METRICS events as they arrive; ``meta_train``'s progress callback; the
   lines of ``star train``'s ``metrics.jsonl`` as they appear; ``one_process.py``).
   Also the median per-step rate, and where the CPU went over the same window (``CpuMeter``:
   CPU seconds of the workers or the single process, the time their threads were runnable but
   waiting for a CPU, CPU of the learner, of Ray's other processes and of the service process),
   and for each worker or single process its cores and its waiting share. Interleaved rounds
   (one run of each per round), medians of per-round ratios.
   Targets: 2 workers >= 1.7x 1 worker; 1 worker >= 0.95x ``meta_train`` pinned to one core;
   2 workers >= 1.2x ``star train``.
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
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cpu_meter import CpuMeter, machine_jiffies, steal_share  # (this folder, next to the script)
from one_process import pinned_meta_train, star_train, steady
from service_calls import measure_fetch, measure_submit

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
    row["processes"] = meter.compute_processes()
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
        "waiting share": cpu["compute_wait"] / (cpu["compute"] + cpu["compute_wait"]),
        "steps per CPU-s": row["inner_steps"] / cpu["compute"],
    }
    for group in ("learner", "ray", "service"):
        if group in cpu:
            out[f"{group} ms/step"] = 1e3 * cpu[group] / steps
    return out


def processes(row: dict) -> str:
    """Each worker (or single process) of a run: its cores, threads that may run outside them,
    the cores' worth of CPU it used and the share of its runnable time spent waiting for a CPU."""
    parts = []
    for p in row["processes"]:
        outside = f", {p['outside']} threads outside them" if p["outside"] else ""
        parts.append(
            f"pid {p['pid']} on cores {','.join(map(str, p['cores']))}{outside}: "
            f"{p['cpu'] / row['seconds']:.2f} cores, waiting "
            f"{p['wait'] / max(p['cpu'] + p['wait'], 1e-9):.0%}"
        )
    return "; ".join(parts)


STAR_TRAIN, PINNED_RUN = "star train (plain, unpinned)", "meta_train, pinned to 1 core"
ONE, TWO, TWO_PINNED = "service, 1 worker", "service, 2 workers", "2 x meta_train pinned at once"


def measure_throughput(client, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Interleaved rounds (one run of each kind per round, the runs that are compared next to
    each other); every run's figures by kind."""
    from services.api.convert import spec_from_proto

    config_json = json.dumps(spec_from_proto(job_spec(args, 1)).config.to_dict())
    single = functools.partial(pinned_meta_train, config_json, discard=args.discard)
    runs = {
        PINNED_RUN: single,
        ONE: lambda: service_job(client, job_spec(args, 1), args.discard),
        TWO: lambda: service_job(client, job_spec(args, 2), args.discard),
        STAR_TRAIN: functools.partial(star_train, config_json, args.discard),
        TWO_PINNED: functools.partial(single, copies=2),
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
                f"{os.getloadavg()[0]:.1f}, steal {steal:.0%})\n    {processes(row)}",
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
        PINNED_RUN: pinned_meta_train(config_json, discard),
        ONE: service_job(client, spec, discard),
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
    """Medians over rounds, as a Markdown table, and the target ratios."""
    columns = list(dict.fromkeys(k for rows in results.values() for r in rows for k in r))
    med = {
        name: {
            k: statistics.median(r[k] for r in rows if k in r)
            for k in columns
            if any(k in r for r in rows)
        }
        for name, rows in results.items()
    }
    base = med[STAR_TRAIN]["steps/s"]
    print(f"| run | {' | '.join(columns)} | x {STAR_TRAIN} |")
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
    ratio(TWO, ONE, results, 1.7, "service: 2 workers / 1 worker")
    ratio(ONE, PINNED_RUN, results, 0.95, "service at 1 worker / meta_train pinned to one core")
    ratio(TWO, STAR_TRAIN, results, 1.2, "service at 2 workers / plain star train")
    ratio(
        TWO_PINNED,
        PINNED_RUN,
        results,
        None,
        "no service: 2 one-core meta_train processes at once / 1 (what the machine gives)",
    )


def ratio(
    top: str, bottom: str, results: dict[str, list[dict]], target: float | None, label: str
) -> None:
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
    verdict = "" if target is None else f"; target >= {target}: "
    verdict += "" if target is None else "met" if headline >= target else "missed"
    print(
        f"{label}: {headline:.2f} (median of rounds {', '.join(f'{r:.2f}' for r in per_round)}"
        f"; ratio of medians {of_medians:.2f}){verdict}"
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
