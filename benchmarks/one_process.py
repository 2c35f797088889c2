"""The one-process runs of ``service_scaling.py``: a meta-training config run without the service.

- :func:`pinned_meta_train`: ``meta_train`` in a fresh subprocess with the environment of a
  service CPU worker (``CPU_WORKER_XLA_FLAGS``, ``OMP_NUM_THREADS=1`` as Ray sets it for a 1-CPU
  actor) and its CPU affinity set to one core before JAX starts, as a worker pins itself;
  ``copies`` such processes at once, on different cores, is what that many one-core workers can
  get from the machine with nothing in between. The subprocess is this file (``__main__``).
- :func:`star_train`: a plain ``star train`` of the config, as a user runs it: the ``star``
  command in a subprocess with the user's environment (no XLA flags, no pinning).

Both return the steady-state figures of :func:`steady` (the first ``discard`` outer steps,
start-up and JIT compile, dropped), the CPU seconds of the process over the same window and the
time its threads were runnable but waiting for a CPU, and its cores (``cpu_meter.affinity``).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_meter import affinity, cpu_between, cpu_sample  # (this folder, next to the script)

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 600.0  # seconds one run may take, start-up included
SAMPLE_S = 0.05  # seconds between looks at star train's metrics.jsonl (its steps take ~0.3 s)


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


def with_cpu(row: dict, pid: int, cpu: list, cores: tuple[list[int], int], discard: int) -> dict:
    """``row`` with the CPU of process ``pid`` between its samples at step ``discard`` and the
    last step, and its cores (``affinity``)."""
    run, wait = cpu_between(cpu[discard], cpu[-1])
    row["cpu"] = {"compute": run, "compute_wait": wait}
    row["processes"] = [
        {"pid": pid, "cores": cores[0], "outside": cores[1], "cpu": run, "wait": wait}
    ]
    return row


# -- meta_train pinned to one core -------------------------------------------------------------


def pinned_meta_train(config_json: str, discard: int, copies: int = 1) -> dict:
    """Steady-state figures of ``copies`` pinned ``meta_train`` processes run at once (each on
    its own core; their figures summed). See the module docstring."""
    from services.cluster.placement import CPU_WORKER_XLA_FLAGS

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1"}
    env.pop("XLA_FLAGS", None)
    if CPU_WORKER_XLA_FLAGS:
        env["XLA_FLAGS"] = CPU_WORKER_XLA_FLAGS
    cores = sorted(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, config_json, str(cores[i % len(cores)])],
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
    total["processes"] = [p for row in rows for p in row["processes"]]
    return total


def child_result(proc: subprocess.Popen, discard: int, t0: float) -> dict:
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        proc.kill()  # a no-op once it has ended
    if proc.returncode:
        raise RuntimeError(f"meta_train subprocess failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    times, inner, rates, cpu = zip(*result["steps"], strict=True)
    row = steady(list(times), list(inner), list(rates), discard, t0)
    return with_cpu(row, proc.pid, cpu, (result["cores"], result["outside"]), discard)


def child_main(config_json: str, core: int) -> None:
    """Pin this process to ``core`` (before JAX starts: XLA sizes its thread pool by it), run
    ``meta_train`` of the config; print every step's (time, inner steps, rate, CPU sample) and
    the process's cores as JSON."""
    os.sched_setaffinity(0, {core})
    from star_core.training.config import MetaTrainConfig
    from star_core.training.loop import meta_train

    config = MetaTrainConfig.from_dict(json.loads(config_json))
    steps: list[list] = []

    def progress(step: int, record: dict) -> None:
        inner = float(record["inner_steps"])
        steps.append([time.perf_counter(), inner, inner / record["seconds"], cpu_sample()])

    with tempfile.TemporaryDirectory() as out_dir:
        meta_train(config, out_dir, progress=progress)
    cores, outside = affinity(os.getpid())
    print(json.dumps({"steps": steps, "cores": cores, "outside": outside}))


# -- plain star train --------------------------------------------------------------------------


def star_train(config_json: str, discard: int) -> dict:
    """Steady-state figures of a plain ``star train`` of the config (the ``star`` command next to
    this Python). Its steps are timed when their lines appear in ``metrics.jsonl``."""
    star = Path(sys.executable).with_name("star")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    with tempfile.TemporaryDirectory(prefix="star-train-") as tmp:
        config, out = Path(tmp) / "config.json", Path(tmp) / "run"
        config.write_text(config_json)
        with open(Path(tmp) / "stderr", "w+") as stderr:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [str(star), "train", str(config), "--out", str(out)],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                steps, cores = follow_metrics(proc, out / "metrics.jsonl")
            finally:
                proc.kill()  # a no-op once it has ended
                proc.wait()
            if proc.returncode:
                stderr.seek(0)
                raise RuntimeError(f"star train failed: {stderr.read()[-2000:]}")
    times, inner, rates, cpu = zip(*steps, strict=True)
    row = steady(list(times), list(inner), list(rates), discard, t0)
    return with_cpu(row, proc.pid, cpu, cores, discard)


def follow_metrics(proc: subprocess.Popen, path: Path) -> tuple[list, tuple[list[int], int]]:
    """[(time seen, inner steps, rate, CPU sample)] of every outer step that ``proc`` wrote to
    ``path`` while it ran (looked at every SAMPLE_S; the CPU of the process is sampled when new
    lines appear), and its ``affinity`` at its first step."""
    steps, seen, cores = [], 0, ([], 0)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            proc.wait(timeout=SAMPLE_S)
            return steps, cores  # steps written as it ended are not timed
        except subprocess.TimeoutExpired:
            pass
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        complete = [line for line in lines if line.endswith("\n")]
        if len(complete) > seen:
            now, sample = time.perf_counter(), cpu_sample(proc.pid)
            if not steps:
                cores = affinity(proc.pid)
            for line in complete[seen:]:
                record = json.loads(line)
                rate = record["inner_steps"] / record["seconds"]
                steps.append([now, record["inner_steps"], rate, sample])
            seen = len(complete)
    raise RuntimeError(f"star train took more than {RUN_TIMEOUT_S:.0f} s")


if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]))
