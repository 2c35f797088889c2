"""What the processes of ``cluster_scaling.py``'s local cluster use: CPU by role and program,
memory, and which one is the learner.

``Meter`` is ``cpu_meter.CpuMeter`` with the stand-in workers (``SleepingWorker``) as the
"compute" group and the learner actor as "learner"; everything else this script started (the
``ray start`` nodes: raylets, GCS, dashboard, agents) is "ray", split by program with
``by_kind``. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from cpu_meter import CpuMeter, cpu_between


class Meter(CpuMeter):
    """CpuMeter with the stand-in workers as the "compute" group; ``by_kind`` splits Ray's
    other processes by program (raylet, gcs_server, dashboard, agents, ...)."""

    GROUPS = {"SleepingWorker": "compute", "LearnerActor": "learner"}

    def start(self) -> None:
        import psutil

        super().start()
        self.kinds = {}
        for pid in self.groups:
            with contextlib.suppress(psutil.Error):
                self.kinds[pid] = process_kind(psutil.Process(pid).cmdline())

    def by_kind(self) -> dict[str, float]:
        """CPU seconds of Ray's other processes ("ray" group) by program."""
        kinds: dict[str, float] = {}
        for pid, group in self.groups.items():
            if group == "ray" and pid in self.kinds:
                kind = self.kinds[pid]
                kinds[kind] = kinds.get(kind, 0.0) + cpu_between(self.first[pid], self.last[pid])[0]
        return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def process_kind(cmdline: list[str]) -> str:
    """A short name of a Ray process: its title (``ray::IDLE``, ``ray-dashboard-StateHead-0``)
    or the program it runs (raylet, gcs_server, dashboard.py, ``-m`` module)."""
    if not cmdline:
        return "?"
    if cmdline[0].startswith(("ray::", "ray-dashboard-")):
        return cmdline[0].split()[0]
    for i, arg in enumerate(cmdline):
        if arg == "-m" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.endswith(".py") or arg.endswith("/ray"):
            return Path(arg).name + (" " + cmdline[i + 1] if arg.endswith("/ray") else "")
    return Path(cmdline[0]).name


def descendants_pss_mb() -> float:
    """Proportional set size (shared pages split among their users) of every process this
    script started (the cluster), in MB."""
    import psutil

    total = 0
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_full_info().pss
    return total / 2**20


def learner_pid() -> int | None:
    import psutil

    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "LearnerActor" in " ".join(proc.cmdline()):
                return proc.pid
    return None
