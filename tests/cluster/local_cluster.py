"""A real multi-node Ray cluster on this machine, and ``star serve`` processes that join it.

Every node is its own ``ray start --block`` process in a new session (``start_new_session``):
a head with no CPUs (like deploy/'s head, it schedules no training work) and worker nodes, each
with one CPU and a custom resource of its own (``node_a``, ``node_b``) so a test can tell where
an actor runs and can ask for a node. The cluster uses Ray's token authentication with a token
file of its own, and every node has its own temp dir, so it shares nothing with any other Ray
instance on the machine (a test session's local Ray, another user's cluster). The head runs the
dashboard on loopback because Ray's state API (``ray list actors``, ``ray.util.state``) is served
by it: without it, Ray 2.60 answers state queries with ServerUnavailable. The tests query it
over HTTP with the cluster's token, so the test process itself never joins the cluster.

Stopping is by process group and session, never ``ray stop`` (which kills every Ray process on
the machine by name). What Ray 2.60 does when a ``ray start --block`` process group gets SIGKILL:
the ``ray start`` process, raylet, GCS, dashboard and agents are in that group and die at once;
actor processes are in groups of their own (the raylet's per-worker process groups) but in the
same session, and exit by themselves within seconds once their raylet is gone. So a node is
stopped with SIGKILL to its group, then anything left in its session is killed by pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BIN = Path(sys.executable).parent
# Seconds to wait for a node to register with the GCS (slow on a busy 2-core CI machine).
NODE_START_TIMEOUT_S = 120.0
# Starts of a worker node whose `ray start` exits before the node is ALIVE (see add_node).
NODE_START_ATTEMPTS = 3
# Seconds the processes of a killed node get to disappear before the test says they leaked.
LEFTOVER_TIMEOUT_S = 20.0
# Seconds the GCS may take to declare a killed node dead (its health checks, below).
NODE_DEATH_TIMEOUT_S = 30.0
# The GCS checks node health every second, not every 3 s (Ray's default): with the default 5
# missed checks, a killed node is declared dead in ~5 s instead of ~15-20 s. Set on the head
# with --system-config; nothing else differs from Ray's defaults.
HEALTH_CHECK_CONFIG = {"health_check_period_ms": 1000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(sid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of session ``sid``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def kill_session(leader: subprocess.Popen, timeout: float = LEFTOVER_TIMEOUT_S) -> list[str]:
    """SIGKILL ``leader``'s process group, wait for the rest of its session to exit, kill any
    stragglers by pid. Returns the processes that outlived ``timeout`` (``name(pid)``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        leader.wait(timeout)
    deadline = time.monotonic() + timeout
    while (left := session_processes(leader.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    outlived = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            outlived.append(f"{proc.name()}({proc.pid})")
            proc.kill()
    return outlived


def clean_env(token_path: Path) -> dict[str, str]:
    """The environment of the cluster's processes: no inherited RAY_* (an outer Ray's address
    or token), token authentication with this cluster's token, CPU JAX."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        JAX_PLATFORMS="cpu",
    )
    return env


class NodeExited(AssertionError):
    """A node's ``ray start`` exited (its log's tail in the message)."""


@dataclasses.dataclass
class Node:
    name: str  # "head", "a", "b"
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class LocalRayCluster:
    """See the module docstring. ``start()`` then ``add_node(...)``; ``stop()`` in a finally.

    ``root`` holds the token and the logs of ``ray start``; ``temp_root`` the nodes' Ray temp
    dirs (keep it short: Ray's Unix socket paths there must stay under 108 bytes)."""

    def __init__(self, root: Path, temp_root: Path):
        self.root = root
        self.temp_root = temp_root
        self.token_path = root / "auth_token"
        self.port = free_port()
        self.dashboard_port = free_port()
        self.nodes: dict[str, Node] = {}
        self.env: dict[str, str] = {}
        self.leftovers: list[str] = []  # of nodes started again (add_node), reported by stop

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()

    def start(self) -> LocalRayCluster:
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        self.env = clean_env(self.token_path)
        self._start_node(
            "head",
            [
                "--head",
                "--num-cpus=0",
                f"--port={self.port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--system-config={json.dumps(HEALTH_CHECK_CONFIG)}",
            ],
        )
        # A worker node's `ray start` gives up when the head is not in the GCS within ~40 s
        # (Ray's retries), which a busy machine can take: nodes join an ALIVE head.
        self.wait_for_nodes({"head"})
        return self

    def add_node(self, name: str, num_cpus: int = 1) -> None:
        """A worker node with ``num_cpus`` CPUs and one unit of the resource ``node_<name>``,
        ALIVE on return.

        ``ray start`` gives its raylet a fixed 30 s to register with the GCS and exits when
        that runs out, which a busy machine exceeds now and then; such a node is started again
        (``NODE_START_ATTEMPTS`` times in all), what it left behind killed first.
        """
        args = [
            f"--address={self.address}",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps({f'node_{name}': 1})}",
        ]
        for attempt in range(1, NODE_START_ATTEMPTS + 1):
            self._start_node(name, args)
            try:
                self.wait_for_nodes({name})
                return
            except NodeExited:
                self.leftovers += kill_session(self.nodes[name].process)
                if attempt == NODE_START_ATTEMPTS:
                    raise

    def _start_node(self, name: str, args: list[str]) -> None:
        # A temp dir of its own: nodes sharing one race for socket names when they start
        # together (a raylet then aborts with "bind: Address already in use").
        temp_dir = self.temp_root / name
        temp_dir.mkdir(exist_ok=True)
        ports = [
            f"--{flag}={free_port()}"
            for flag in (
                "dashboard-agent-listen-port",
                "metrics-export-port",
                "runtime-env-agent-port",
            )
        ]
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [
                    str(BIN / "ray"),
                    "start",
                    "--block",
                    "--disable-usage-stats",
                    f"--temp-dir={temp_dir}",
                    *ports,
                    *args,
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes[name] = Node(name, process, log)

    def kill_node(self, name: str) -> list[str]:
        """SIGKILL a node (a machine that dies); returns the processes that outlived it."""
        return kill_session(self.nodes[name].process)

    def stop(self) -> list[str]:
        """Kill every node; returns leftover processes (``name(pid)``), [] when clean."""
        leftovers, self.leftovers = self.leftovers, []
        for name in reversed(list(self.nodes)):
            leftovers += self.kill_node(name)
        return leftovers

    # -- Ray's state API (over the head's dashboard, with the cluster's token) ------------------

    def state(self) -> Any:
        from ray.util.state.api import StateApiClient

        return StateApiClient(
            address=f"http://127.0.0.1:{self.dashboard_port}",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )

    def list_nodes(self) -> list[Any]:
        from ray.util.state.common import ListApiOptions, StateResource

        return self.state().list(
            StateResource.NODES, options=ListApiOptions(detail=True), raise_on_missing_output=False
        )

    def actors(self, name: str, alive_only: bool = True) -> list[Any]:
        """The actors named ``name`` (only the ALIVE ones unless ``alive_only`` is False: a
        finished job's actors are DEAD but keep the node they ran on)."""
        from ray.util.state.common import ListApiOptions, StateResource

        filters = [("name", "=", name)] + ([("state", "=", "ALIVE")] if alive_only else [])
        options = ListApiOptions(filters=filters)
        return self.state().list(
            StateResource.ACTORS, options=options, raise_on_missing_output=False
        )

    def node_ids(self) -> dict[str, str]:
        """Node name -> Ray node id of the ALIVE nodes ("head" for the head)."""
        ids = {}
        for node in self.list_nodes():
            if node.state != "ALIVE":
                continue
            names = [r[len("node_") :] for r in node.resources_total if r.startswith("node_")]
            ids["head" if node.is_head_node else names[0]] = node.node_id
        return ids

    def wait_for_nodes(self, names: set[str], timeout: float = NODE_START_TIMEOUT_S) -> dict:
        """Wait until the nodes ``names`` are ALIVE; returns :meth:`node_ids`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running(names)
            with contextlib.suppress(Exception):  # the dashboard is still starting
                ids = self.node_ids()
                if names <= set(ids):
                    return ids
            time.sleep(0.5)
        raise AssertionError(
            f"nodes {sorted(names)} did not come up in {timeout:.0f} s:\n"
            + "\n".join(n.log_tail() for n in self.nodes.values())
        )

    def wait_for_death(self, name: str, timeout: float = NODE_DEATH_TIMEOUT_S) -> float:
        """Wait until the GCS no longer lists node ``name`` as ALIVE; returns the seconds."""
        start = time.monotonic()
        while name in self.node_ids():
            if time.monotonic() - start > timeout:
                raise AssertionError(
                    f"the GCS still lists node {name} as ALIVE after {timeout:.0f} s"
                )
            time.sleep(0.2)
        return time.monotonic() - start

    def _check_running(self, names: set[str]) -> None:
        for node in (self.nodes[name] for name in names | {"head"}):
            if node.process.poll() is not None:
                raise NodeExited(
                    f"ray start of node {node.name} exited "
                    f"({node.process.returncode}):\n{node.log_tail()}"
                )
