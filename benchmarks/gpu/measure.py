"""GPU workers, measured: the figures of an accelerator machine in one run, within a time budget.

Four parts, each in its own subprocess (a crash or a hang in one leaves the others' figures,
and each frees its device memory when it ends), in this order:

1. ``optimizer_step``: one jitted inner step of the fmnist_mlp model (784-128-128-10, batch 128,
   synthetic inputs) with Adam, Blackbox and STAR, interleaved rounds
   (``benchmarks/optimizer_step.py``'s ``measure``). Goal on the GPU: STAR/Adam <= 1.3.
2. ``meta_train``: PES meta-training of STAR on the fmnist shape (``fmnist_synthetic``) next to
   the vmapped-Adam ceiling, end to end and kernel only (``benchmarks/meta_train_throughput.py``'s
   ``measure``). Goal: PES >= 0.7x the ceiling.
3. ``service``: the service in this process (``services.app.BackgroundService``) on a local Ray
   instance, PES jobs on ``nqm`` (no dataset needed) submitted through the gRPC API with 1, 2, 4
   and 8 workers sharing the machine's GPU (``gpus_per_worker`` unset: the service shares GPUs
   with fractional requests), inner steps/s at steady state from WatchJob's METRICS events, and
   ``Job.device`` (see ``service_workers.py``). Goal: 8 workers >= 4x one worker.
4. ``tests``: the core's tests (``tests/optimizers``, ``features``, ``estimators``,
   ``training``, in that order) with the chosen platform as JAX's, in parallel processes where
   pytest-xdist is installed (the GPU image has it); a test that needs tensorflow-datasets (not
   on the GPU machine) is counted apart from real failures.

The parts share the budget (``--budget`` seconds): each gets a fixed share of what is left when
it starts, so time a part does not use goes to the later ones, and each one records its figures
as soon as it has them, so a part cut at its share still reports what it measured. After every
part, ``summary.json`` and ``summary.md`` are written to ``--out``.

``--platform gpu`` runs JAX on CUDA (the worker actors pick the GPU themselves); ``--platform
cpu`` runs the same code on the CPU (there the jobs' device is "cpu"), for a proof of the script
on a machine without a GPU; ``--size small`` shrinks every part for that, and ``--logical-gpus
1`` makes Ray announce one GPU there, so that the service places its workers as it does on the
GPU machine (fractional GPUs, device "gpu") while they compute on the CPU.

    python benchmarks/gpu/measure.py --platform gpu --out "$OUT"                  # the device
    python benchmarks/gpu/measure.py --platform cpu --size small --out /tmp/gpu   # a CPU proof
    python benchmarks/gpu/measure.py --platform cpu --size small --logical-gpus 1 \
        --parts service --out /tmp/gpu-placement                                   # GPU placement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from sizes import GOALS, SIZES, Size  # noqa: E402  (this folder)

# Share of the remaining budget that each part gets when it starts, in run order.
PART_SHARES = {"optimizer_step": 2, "meta_train": 3, "service": 5, "tests": 3}
# Seconds a part's process is given after its share to write its figures and stop its
# children (Ray, the service) before it is killed.
GRACE_S = 20
# JAX_PLATFORMS of the parts that run JAX in their own process, by --platform.
JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda"}


def write_json(path: Path, data: dict) -> None:
    """``data`` as JSON at ``path``, replaced atomically (a reader never sees half a file)."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=2, default=str))
    partial.replace(path)


def part_env(part: str, platform_name: str, home: str) -> dict[str, str]:
    """The environment of a part's process."""
    env = dict(os.environ, HOME=home, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # parts run one after another; be modest
    if part == "service" and platform_name == "gpu":
        env.pop("JAX_PLATFORMS", None)  # as `star serve` runs: GPU workers pick the GPU
    else:
        env["JAX_PLATFORMS"] = JAX_PLATFORM[platform_name]
    return env


def run_part(part: str, args: argparse.Namespace, seconds: float, home: str) -> dict:
    """Run ``part`` in a subprocess for at most ``seconds`` (+ grace); its recorded figures."""
    result_file = Path(args.out) / f".{part}.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", part]
    command += ["--platform", args.platform, "--size", args.size, "--out", str(args.out)]
    command += ["--deadline", str(time.time() + seconds), "--result", str(result_file)]
    if args.logical_gpus:
        command += ["--logical-gpus", str(args.logical_gpus)]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=part_env(part, args.platform, home), start_new_session=True
    )
    try:
        status = f"exit {process.wait(timeout=seconds + GRACE_S)}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the part and its children
        process.wait()
        status = "killed at its time share"
    figures = json.loads(result_file.read_text()) if result_file.exists() else {}
    result_file.unlink(missing_ok=True)
    return {"status": status, "seconds": round(time.perf_counter() - start, 1), **figures}


def machine() -> dict[str, str]:
    """What this run ran on (no JAX here: the parts report their own JAX devices)."""
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    try:
        gpus = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        gpus = ""
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores visible",
        "gpus": gpus or "none (no nvidia-smi)",
        "python": platform.python_version(),
        "load_average_at_start": f"{os.getloadavg()[0]:.1f}",
    }


def goal_lines(parts: dict) -> list[dict]:
    """Each goal with its measured value and met / missed / not measured."""
    from report import goal_values

    out = []
    for name, (label, target, higher) in GOALS.items():
        for where, value in goal_values(name, parts):
            if value is None:
                verdict = "not measured"
            else:
                verdict = "met" if (value >= target if higher else value <= target) else "missed"
            out.append(
                {"goal": name, "label": label, "where": where, "value": value, "verdict": verdict}
            )
    return out


def orchestrate(args: argparse.Namespace) -> None:
    from report import markdown

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    summary = {
        "platform": args.platform,
        "size": args.size,
        "budget_s": args.budget,
        "machine": machine(),
        "parts": {},
    }
    print(f"machine: {summary['machine']}", flush=True)
    parts = [p for p in PART_SHARES if p in args.parts]
    with tempfile.TemporaryDirectory(prefix="star-gpu-home-") as home:
        for i, part in enumerate(parts):
            left = deadline - time.time()
            shares = sum(PART_SHARES[p] for p in parts[i:])
            seconds = left * PART_SHARES[part] / shares
            if seconds < 5:
                summary["parts"][part] = {"status": "skipped: the time budget ran out"}
            else:
                print(f"\n== {part}: up to {seconds:.0f} s", flush=True)
                summary["parts"][part] = run_part(part, args, seconds, home)
            summary["goals"] = goal_lines(summary["parts"])
            write_json(out / "summary.json", summary)
            (out / "summary.md").write_text(markdown(summary))
            print(f"== {part}: {summary['parts'][part]['status']}", flush=True)
    print("\n" + (out / "summary.md").read_text(), flush=True)


def child(args: argparse.Namespace) -> None:
    """One part in this process: its figures go to ``--result`` as they come."""
    size: Size = SIZES[args.size]
    result_file = Path(args.result)

    def record(figures: dict) -> None:
        write_json(result_file, figures)

    if args.child == "service":
        from service_workers import measure_service

        measure_service(size, args.platform, args.deadline, record, args.logical_gpus)
    else:
        import parts

        getattr(parts, args.child)(size, args.deadline, record, Path(args.out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=sorted(JAX_PLATFORM), required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", required=True, help="folder for summary.json / summary.md")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for all parts")
    parser.add_argument("--parts", nargs="+", choices=list(PART_SHARES), default=list(PART_SHARES))
    parser.add_argument(
        "--logical-gpus",
        type=float,
        help="cpu platform: tell Ray the machine has this many GPUs, so that the service "
        "places its workers as on a GPU machine (fractional GPUs, Job.device gpu) while "
        "they compute on the CPU",
    )
    parser.add_argument("--child", choices=list(PART_SHARES), help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
