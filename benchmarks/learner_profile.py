"""Where the learner actor's time goes during an outer step, by sampling it with py-spy.

``profile(pid, seconds)`` runs ``py-spy record --idle --nonblocking`` on the learner's process
(every thread, waiting ones included, without pausing it) and sorts each sampled stack of the
thread that runs ``LearnerActor.run`` into one phase of the outer step (:data:`PHASES`: the
first rule whose function appears in the stack, innermost frame first). The result is the
share of that thread's wall time per phase; times the measured seconds per outer step, it is the
per-step cost breakdown: how long the step waited for estimates and how long each part of the
learner's own work took. Stacks without ``LearnerActor.run`` on that thread are Ray's own
work between two items of the streaming generator (sending an event to the runner) or idle
thread-pool time ("between items").
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

# Samples per second (py-spy's default is 100).
RATE_HZ = 200
# (phase, function names as py-spy prints them): the first phase with a function in the stack,
# looking from the innermost frame outwards, takes the sample.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("apply: all_finite per estimate", ("all_finite", "_finite_mask")),
    ("apply: mean and outer step", ("Learner.apply",)),
    ("metrics export", ("JobMetrics.record",)),
    ("publish: put", ("RayBackend.put",)),
    ("publish: submit estimates", ("WorkerPool.publish", "WorkerPool._submit")),
    ("wait for estimates", ("RayBackend.wait",)),
    ("get results", ("RayBackend.get", "WorkerPool._result")),
    ("gather: other", ("WorkerPool.gather",)),
    ("step record", ("LearnerActor._record",)),
    ("device_get theta", ("device_get",)),
    ("learner: other", ("LearnerActor.run",)),
)
BETWEEN = "between items (event to the runner, Ray)"


def py_spy() -> str | None:
    """The py-spy executable next to this Python, else on PATH (None: not installed)."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (raw collapsed stacks, with thread
    ids); None when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        return None
    command = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(RATE_HZ),
        "--idle",
        "--nonblocking",
        "--threads",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen | None, out: Path, timeout: float) -> dict[str, float]:
    """Wait for the sampler; the learner thread's share of wall time per phase ({} when there
    is no profile)."""
    if process is None:
        return {}
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        process.kill()  # a no-op once it has ended
    if process.returncode or not out.exists():
        print(f"  (py-spy failed: {err.strip()[-300:]})", flush=True)
        return {}
    return shares(out.read_text())


def shares(raw: str) -> dict[str, float]:
    """Phase -> share of the samples of the thread that runs ``LearnerActor.run``."""
    by_thread: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        by_thread[frames[0]].append(([f.split(" (")[0] for f in frames[1:]], int(count)))
    learner = [t for t, rows in by_thread.items() if any("LearnerActor.run" in f for f, _ in rows)]
    if not learner:
        return {}
    counts: collections.Counter[str] = collections.Counter()
    for thread in learner:
        for frames, count in by_thread[thread]:
            counts[phase_of(frames)] += count
    total = sum(counts.values())
    return {phase: count / total for phase, count in counts.most_common()}


def phase_of(frames: list[str]) -> str:
    """The phase of one stack (outermost frame first)."""
    for frame in reversed(frames):
        for phase, names in PHASES:
            if any(frame == name or frame.endswith("." + name) for name in names):
                return phase
    return BETWEEN
