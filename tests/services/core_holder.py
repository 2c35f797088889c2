"""A process that claims cores (``services.cluster.cores``) and holds them until its stdin closes,
and :class:`Holder`, the tests' handle on one (with :func:`cpus_allowed`, read from ``/proc``).

Usage: ``python core_holder.py DIR COUNT [ALLOWED]``: first narrows its CPU affinity to
``ALLOWED`` (comma-separated cores) when given, optionally starts a thread (``--thread``) that
exists before the claim, then claims ``COUNT`` cores in the claim directory ``DIR`` and prints one
JSON line: the cores claimed, the reason when unpinned, and the CPU affinity of each of its
threads read back from ``/proc/self/task``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from services.cluster.cores import claim_cores


class Holder:
    """A core_holder.py process: its claim (JSON line) and its pid."""

    def __init__(self, directory: Path, count: int, allowed: list[int], thread: bool = False):
        args = [str(directory), str(count), ",".join(map(str, allowed))]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args, *(["--thread"] if thread else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the holder exited with {self.proc.wait()} before claiming")
        self.report = json.loads(line)
        self.cores = self.report["cores"]

    def allowed_list(self) -> set[int]:
        """The process's CPU affinity as the kernel reports it (``Cpus_allowed_list``)."""
        return cpus_allowed(Path(f"/proc/{self.proc.pid}/status"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def cpus_allowed(status: Path) -> set[int]:
    """The cores of ``Cpus_allowed_list`` in a /proc status file (``0-2,5``)."""
    for line in status.read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            found = set()
            for part in line.split(":", 1)[1].strip().split(","):
                low, _, high = part.partition("-")
                found |= set(range(int(low), int(high or low) + 1))
            return found
    raise AssertionError(f"no Cpus_allowed_list in {status}")


def main(argv: list[str]) -> None:
    directory, count = Path(argv[0]), int(argv[1])
    rest = [a for a in argv[2:] if a != "--thread"]
    if rest:
        os.sched_setaffinity(0, {int(c) for c in rest[0].split(",")})
    if "--thread" in argv:
        threading.Thread(target=threading.Event().wait, daemon=True).start()  # never set
    claim = claim_cores(count, directory)
    threads = {tid: sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")}
    line = {"cores": list(claim.cores), "reason": claim.reason, "threads": threads}
    print(json.dumps(line), flush=True)
    sys.stdin.read()  # hold the claim until the test closes our stdin (or kills us)


if __name__ == "__main__":
    main(sys.argv[1:])
