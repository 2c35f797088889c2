"""A process that claims cores (``services.cluster.cores``) and holds them until its stdin closes.

Usage: ``python core_holder.py DIR COUNT [ALLOWED]``: first narrows its CPU affinity to
``ALLOWED`` (comma-separated cores) when given, optionally starts a thread (``--thread``) that
exists before the claim, then claims ``COUNT`` cores in the claim directory ``DIR`` and prints one
JSON line: the cores claimed, the reason when unpinned, and the CPU affinity of each of its
threads read back from ``/proc/self/task``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from services.cluster.cores import claim_cores


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
