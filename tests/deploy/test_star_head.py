"""deploy/docker/star-head.sh, the loop that keeps `star serve` running beside a Ray head.

The script runs for real under bash; `ray` and `star` are small stand-in executables on PATH
that record how they were called, so each test can say what the script did and in which order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploy import REPO, dev_tool

pytestmark = pytest.mark.processes  # every test runs the script or shellcheck

SCRIPT = REPO / "deploy" / "docker" / "star-head.sh"
TIMEOUT_S = 20.0

# `ray health-check` succeeds once the file `ray-up` exists (the head has started).
FAKE_RAY = """#!/usr/bin/env bash
echo "$*" >> "$STUB_DIR/ray-calls"
[[ "$1" == "health-check" && -f "$STUB_DIR/ray-up" ]]
"""
# `star serve` records its arguments, then exits with the status in the file `exit-<n>` for its
# n-th run, or, when there is none, runs until SIGTERM and exits 0 (a clean shutdown).
FAKE_STAR = """#!/usr/bin/env bash
n=$(( $(cat "$STUB_DIR/star-runs" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$STUB_DIR/star-runs"
echo "$*" >> "$STUB_DIR/star-calls"
if [[ -f "$STUB_DIR/exit-$n" ]]; then exit "$(cat "$STUB_DIR/exit-$n")"; fi
trap 'exit 0' TERM
while true; do sleep 0.05; done
"""


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    for name, text in (("ray", FAKE_RAY), ("star", FAKE_STAR)):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o755)
    return tmp_path


def _env(stubs: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_DIR": str(stubs),
        "STAR_HEAD_RUN_DIR": str(stubs / "run"),
        "STAR_RESTART_DELAY_S": "0.1",
        "RAY_ADDRESS": "127.0.0.1:6379",
    }


def _wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _serving(stubs: Path) -> bool:
    """The loop recorded the service's pid and the service itself has started (on a loaded
    machine the pid file can come before the fake `star` gets to record its call)."""
    return (stubs / "run" / "star-serve.pid").exists() and bool(_lines(stubs / "star-calls"))


@pytest.fixture
def start(stubs: Path):
    procs: list[subprocess.Popen] = []

    def _start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen(["bash", str(SCRIPT), *args], env=_env(stubs))
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # The fake `star serve` of a killed loop may still run: stop it by its recorded pid.
    pid_file = stubs / "run" / "star-serve.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_waits_for_the_ray_head_then_serves_with_its_address(stubs, start):
    start("--port", "50051", "--data-dir", "/data")
    _wait_for(lambda: len(_lines(stubs / "ray-calls")) >= 2, "two health checks")
    assert not (stubs / "star-calls").exists()  # no service before the head is up
    (stubs / "ray-up").touch()
    _wait_for(lambda: (stubs / "star-calls").exists(), "star serve to start")
    assert _lines(stubs / "ray-calls")[0] == "health-check --address 127.0.0.1:6379"
    assert _lines(stubs / "star-calls") == [
        "serve --ray-address 127.0.0.1:6379 --port 50051 --data-dir /data"
    ]


def test_restarts_star_serve_after_a_crash_and_stop_ends_it_for_good(stubs, start):
    (stubs / "ray-up").touch()
    (stubs / "exit-1").write_text("3")  # the first run crashes, the second one keeps running
    loop = start("--port", "1")
    _wait_for(lambda: len(_lines(stubs / "star-calls")) == 2, "the restart")
    _wait_for(lambda: (stubs / "run" / "star-serve.pid").exists(), "the pid file")

    started = time.monotonic()
    subprocess.run(["bash", str(SCRIPT), "--stop"], env=_env(stubs), timeout=TIMEOUT_S, check=True)
    assert time.monotonic() - started < 5.0  # returns once the loop is gone, not at its timeout
    assert loop.wait(timeout=TIMEOUT_S) == 0
    assert len(_lines(stubs / "star-calls")) == 2  # stopped, not restarted
    assert not (stubs / "run" / "star-serve.pid").exists()
    assert not (stubs / "run" / "star-head.pid").exists()


def test_a_second_loop_refuses_to_start_while_one_runs(stubs, start):
    (stubs / "ray-up").touch()
    first = start()
    _wait_for(lambda: _serving(stubs), "the first service")
    second = subprocess.run(
        ["bash", str(SCRIPT)], env=_env(stubs), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert second.returncode == 1
    assert f"already running (pid {first.pid})" in second.stderr
    assert len(_lines(stubs / "star-calls")) == 1


def test_stop_while_waiting_for_the_ray_head_never_starts_the_service(stubs, start):
    loop = start()
    _wait_for(lambda: (stubs / "ray-calls").exists(), "a health check")
    subprocess.run(["bash", str(SCRIPT), "--stop"], env=_env(stubs), timeout=TIMEOUT_S, check=True)
    assert loop.wait(timeout=TIMEOUT_S) == 0
    (stubs / "ray-up").touch()
    assert not (stubs / "star-calls").exists()


def test_a_clean_exit_is_not_restarted(stubs, start):
    (stubs / "ray-up").touch()
    (stubs / "exit-1").write_text("0")
    assert start().wait(timeout=TIMEOUT_S) == 0
    assert _lines(stubs / "star-calls") == ["serve --ray-address 127.0.0.1:6379"]


def test_sigterm_to_the_loop_stops_the_service(stubs, start):
    (stubs / "ray-up").touch()
    loop = start()
    _wait_for(lambda: _serving(stubs), "the service")
    loop.send_signal(signal.SIGTERM)
    assert loop.wait(timeout=TIMEOUT_S) == 0
    assert len(_lines(stubs / "star-calls")) == 1


def test_the_script_passes_shellcheck():
    result = subprocess.run([dev_tool("shellcheck"), str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
