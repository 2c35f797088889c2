"""Cores of its own for a CPU worker: a node-local claim, then CPU affinity.

A CPU worker's XLA runtime sizes its thread pool by the cores the process may run on (its CPU
affinity) when JAX starts. Left alone, every worker on a node spans every core, and two workers
on two cores each run ~1.5 cores' worth of threads that wait for each other. So, before JAX
starts, a worker claims ``count`` cores that no other STAR worker on the node holds and
restricts itself (every thread it has, and so every thread it starts later) to them.

The claim is one lock file per core in a node-local directory (:func:`claim_dir`), each held
with ``flock`` on a file descriptor that stays open for the life of the process: the kernel
releases the lock when the process ends, however it ends (SIGKILL included), so a claim never
outlives its worker and there is nothing to clean up. A process that finds fewer than
``count`` free cores among those it may use claims none and runs unpinned (the caller says so).

The claim directory is shared by the processes of one machine, or of one container: a container
(a Kubernetes pod) has its own ``/dev/shm``, and its workers cannot see the claims of another
container on the same machine. Where the container's cores are its own (a cpuset, Kubernetes'
static CPU manager) that is right; where it gets a CPU-time quota on cores it shares (the usual
``resources.limits.cpu``), pinning would pile the workers of several containers onto the same
low-numbered cores. So a process whose cgroup quota is below its number of allowed cores runs
unpinned (:func:`cpu_quota`). Linux only (``sched_setaffinity``, ``/proc``, cgroups); elsewhere
every claim is unpinned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

# Environment variable naming the claim directory; it must be the same for every STAR worker
# of a node (tests set their own to stay apart from other programs on the machine).
CLAIM_DIR_ENV = "STAR_CORE_CLAIMS_DIR"
# Default claim directory's name, under /dev/shm (memory-backed, node-local, emptied at boot)
# or, where there is none, under the system temp directory.
CLAIM_DIR_NAME = "star-cores"
SHM = Path("/dev/shm")
# Mode of a new claim directory: anyone may add a lock file (sticky, like /tmp), so that
# workers of different users on one node see each other's claims.
CLAIM_DIR_MODE = 0o1777
# Mode of a new lock file (its content, the holder's pid, is informational only).
LOCK_FILE_MODE = 0o644
# Where the cgroup file systems are mounted, and the process's cgroups (``ID:CONTROLLERS:PATH``).
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclasses.dataclass(frozen=True)
class CoreClaim:
    """The cores a process holds (empty: unpinned, and ``reason`` says why), and the open lock
    file descriptors that hold them."""

    cores: tuple[int, ...]
    reason: str = ""
    fds: tuple[int, ...] = ()

    @property
    def pinned(self) -> bool:
        return bool(self.cores)


def claim_dir() -> Path:
    """The node's claim directory: ``$STAR_CORE_CLAIMS_DIR``, else ``/dev/shm/star-cores``,
    else ``<temp dir>/star-cores``."""
    configured = os.environ.get(CLAIM_DIR_ENV)
    if configured:
        return Path(configured)
    base = SHM if SHM.is_dir() else Path(tempfile.gettempdir())
    return base / CLAIM_DIR_NAME


def claim_cores(count: int, directory: Path | None = None) -> CoreClaim:
    """Claim ``count`` free cores of the calling process's allowed set and pin the process to
    them; unpinned (nothing claimed, affinity unchanged) when fewer than ``count`` are free."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not hasattr(os, "sched_setaffinity"):
        return CoreClaim((), "this system has no CPU affinity")
    allowed = sorted(os.sched_getaffinity(0))
    if count > len(allowed):
        return CoreClaim((), f"{count} cores asked for, the process may run on {len(allowed)}")
    quota = cpu_quota()
    if quota is not None and quota < len(allowed):
        return CoreClaim(
            (),
            f"its cgroup's CPU quota ({quota:g} CPUs) is below the {len(allowed)} cores it may "
            "run on: they are shared with other containers, whose claims it cannot see",
        )
    directory = claim_dir() if directory is None else Path(directory)
    _make_dir(directory)
    held: list[tuple[int, int]] = []  # (core, fd)
    for core in allowed:
        fd = _lock(directory / f"core-{core}.lock")
        if fd is not None:
            held.append((core, fd))
            if len(held) == count:
                break
    if len(held) < count:
        release(CoreClaim((), "", tuple(fd for _, fd in held)))
        return CoreClaim(
            (),
            f"{count} cores asked for, {len(held)} of the {len(allowed)} it may run on are "
            f"free (the others are held by STAR workers on this node, see {directory})",
        )
    cores = tuple(core for core, _ in held)
    pin_process(set(cores))
    return CoreClaim(cores, "", tuple(fd for _, fd in held))


def release(claim: CoreClaim) -> None:
    """Give the claim's cores back (the process's affinity stays as it is). A process's claims
    are also released when it ends."""
    for fd in claim.fds:
        os.close(fd)  # closing the only descriptor of the open file drops its flock


def pin_process(cores: set[int]) -> None:
    """Restrict every thread of this process to ``cores``. Threads inherit their creator's
    affinity, so the threads started later follow; the loop repeats until a pass over
    ``/proc/self/task`` finds no thread it has not pinned (one started meanwhile)."""
    done: set[int] = set()
    while True:
        threads = {int(tid) for tid in os.listdir("/proc/self/task")} - done
        if not threads:
            return
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
                os.sched_setaffinity(tid, cores)
        done |= threads


def cpu_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs' worth of time the process's cgroups allow per period: the smallest quota of its
    CPU cgroup and of those above it (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``); None when none is set or the files cannot be read."""
    quotas = []
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers and "cpu" not in controllers.split(","):
            continue
        folder = (root / controllers if controllers else root) / path.lstrip("/")
        for level in (folder, *folder.parents):
            quotas.append(_quota(level))
            if level == root or root not in level.parents:
                break
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _quota(folder: Path) -> float | None:
    """The CPU quota set in one cgroup folder, in CPUs; None when unlimited or absent."""
    with contextlib.suppress(OSError, ValueError):
        limit, window = (folder / "cpu.max").read_text().split()
        return None if limit == "max" else int(limit) / int(window)
    with contextlib.suppress(OSError, ValueError):
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota < 0 else quota / period
    return None


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        return
    os.chmod(directory, CLAIM_DIR_MODE)  # mkdir's mode is masked by the umask


def _lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive flock, or None when another
    process holds it (or the file cannot be opened: taken as held)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_FILE_MODE)
    except OSError as err:
        logger.warning("cannot open the core claim %s: %s", path, err)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            logger.warning("cannot lock the core claim %s: %s", path, err)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
    return fd
