"""What one service holds alone: its data directory (``DataDirectoryLock``) and its port
(``check_address``). Light on purpose (the standard library only): ``star serve`` checks both
before it imports the rest of the service or starts Ray, so a second one exits at once.

Two services on one data directory would take each other's jobs: each requeues the jobs the
store says are RUNNING and runs them too. ``star serve`` therefore takes an exclusive lock on
``<data-dir>/star.lock`` before anything else (Ray, the store) and holds it while it runs::

    lock = DataDirectoryLock(data_dir).acquire()   # DataDirectoryInUse if another holds it
    check_address(host, port)                      # AddressInUse if another listens there
    ...
    lock.release()

The lock is ``flock(2)`` on an open file description: the kernel drops it when the process
ends, however it ends (SIGKILL included), so no stale lock survives a crash, and nothing has
to be cleaned up by hand. The descriptor is close-on-exec, so the processes the service starts
(Ray's) never hold it. The holder writes its pid into the file, so that a second service can
say who holds the directory. The file itself is never deleted: removing it while another
process waits on it would let two processes lock two different files of the same name.

The port: gRPC binds with SO_REUSEPORT by default, so two servers would share one port and
split its calls between them. ``services.api.server`` turns that off; ``check_address`` tells
beforehand, with a bind of its own that is closed at once: without SO_REUSEPORT (so a listener
refuses it) and with SO_REUSEADDR, as gRPC's own (so the TIME_WAIT connections of a server that
just stopped do not block its restart).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = "star.lock"
# Bytes of the lock file read back for the holder's pid (a pid and a newline).
PID_BYTES = 32


class DataDirectoryInUse(RuntimeError):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: Path, holder: int | None):
        who = f"pid {holder}" if holder is not None else "a process whose pid is not known yet"
        super().__init__(
            f"data directory {data_dir} is in use by another star serve ({who});"
            " stop it or give another --data-dir"
        )
        self.data_dir = data_dir
        self.holder = holder


class DataDirectoryLock:
    """The exclusive lock of one data directory (see the module docstring)."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir).resolve()
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DataDirectoryLock:
        """Take the lock at once (no waiting); DataDirectoryInUse when another holds it."""
        if self._fd is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirectoryInUse(self.data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it); a no-op when not held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote (None if it has not written it yet)."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, PID_BYTES, 0).decode().strip())
    return None


class AddressInUse(OSError):
    """The server cannot listen on its address (another process holds the port)."""


def check_address(host: str, port: int) -> None:
    """AddressInUse when another process listens on ``host:port`` (port 0: nothing to check).

    Errors other than "address in use" (an address this machine does not have) are left for
    the server's own bind to report.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    raise AddressInUse(
                        f"cannot listen on {host}:{port}: the port is in use (another star serve?)"
                    ) from err
