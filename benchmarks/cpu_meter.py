"""CPU accounting of processes from /proc, for benchmarks on shared machines.

``cpu_sample(pid)`` reads a process's CPU seconds (``psutil``: user + system, ended threads
included) and, per thread, the seconds it was runnable but waiting for a CPU (the second field
of ``/proc/<pid>/task/<tid>/schedstat``): on a machine shared with other work, CPU seconds say
what a program cost and the waiting time says how much more it would have run with the cores
to itself. ``CpuMeter`` groups this process and its descendants (a Ray instance it started) by
role, and keeps each compute process's figures with its cores (``affinity``: the process's CPU
affinity and how many of its threads may run outside it). ``machine_jiffies`` /
``steal_share``: the share of the machine's CPU time that a hypervisor gave to other virtual
machines meanwhile. Linux only.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cpu_sample(pid: int | None = None) -> tuple[float, dict[str, float]]:
    """(CPU seconds of process ``pid`` so far, ended threads included; {thread id: seconds it
    was runnable but waiting for a CPU}, from ``/proc/<pid>/task/*/schedstat``)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    waits = {}
    for task in Path(f"/proc/{pid or 'self'}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            waits[task.name] = int((task / "schedstat").read_text().split()[1]) / 1e9
    return times.user + times.system, waits


def cpu_between(first: tuple, last: tuple) -> tuple[float, float]:
    """(CPU seconds, seconds waiting for a CPU summed over the threads alive at both samples)."""
    wait = sum(last[1][tid] - first[1][tid] for tid in first[1].keys() & last[1].keys())
    return last[0] - first[0], wait


def affinity(pid: int) -> tuple[list[int], int]:
    """(the cores process ``pid`` may run on, how many of its threads may run on others)."""
    cores = os.sched_getaffinity(pid)
    outside = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # the thread ended meanwhile
            outside += not os.sched_getaffinity(int(task.name)) <= cores
    return sorted(cores), outside


class CpuMeter:
    """CPU use since ``start()`` of this process ("service": the gRPC server, runner and store,
    and this script's client) and of its descendants: Ray's worker actors ("compute"; and the
    seconds their threads waited for a CPU: "compute_wait"), learner actors ("learner") and
    everything else Ray runs ("ray")."""

    GROUPS = {"WorkerActor": "compute", "LearnerActor": "learner"}  # in the process title

    def start(self) -> None:
        import psutil

        me = psutil.Process()
        self.groups = {me.pid: "service"}
        for proc in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                title = " ".join(proc.cmdline())
                self.groups[proc.pid] = next(
                    (g for p, g in self.GROUPS.items() if p in title), "ray"
                )
        self.first = {pid: cpu_sample(pid) for pid in self.groups}
        self.last = dict(self.first)
        self.cores = {
            pid: affinity(pid) for pid, group in self.groups.items() if group == "compute"
        }

    def read(self) -> None:
        """Take a sample (a process that ended keeps its last one)."""
        import psutil

        for pid in self.first:
            with contextlib.suppress(psutil.Error, OSError):
                self.last[pid] = cpu_sample(pid)

    def compute_processes(self) -> list[dict]:
        """Each compute process: pid, cores (its affinity at ``start``), threads outside them,
        CPU seconds and seconds its threads waited for a CPU."""
        found = []
        for pid, (cores, outside) in self.cores.items():
            run, wait = cpu_between(self.first[pid], self.last[pid])
            found.append({"pid": pid, "cores": cores, "outside": outside, "cpu": run, "wait": wait})
        return found

    def by_group(self) -> dict[str, float]:
        groups = {"compute_wait": 0.0}
        for pid, group in self.groups.items():
            run, wait = cpu_between(self.first[pid], self.last[pid])
            groups[group] = groups.get(group, 0.0) + run
            if group == "compute":
                groups["compute_wait"] += wait
        return groups


def machine_jiffies() -> list[int]:
    """The machine's CPU time counters (the ``cpu`` line of ``/proc/stat``)."""
    with open("/proc/stat") as handle:
        return [int(v) for v in handle.readline().split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of CPU time between two ``machine_jiffies`` that the hypervisor gave to other
    machines (steal: the 8th counter)."""
    deltas = [b - a for a, b in zip(before, after, strict=True)]
    return deltas[7] / max(sum(deltas[:8]), 1)
