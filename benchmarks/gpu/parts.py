"""The JAX parts of the GPU measurement (``measure.py``): the optimizer step, the meta-training
throughput (both through the measuring functions of the scripts next to this folder) and the
core's tests. Each one takes ``(size, deadline, record, out)`` and calls ``record(figures)``
whenever it has new figures, so that a part cut at its deadline still reports them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Seconds kept back from a part's deadline to write its figures.
MARGIN_S = 5
# pytest's verbose line of one test's outcome, and the short summary line of a failure.
STATUS = "(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)"
OUTCOME = re.compile(rf"^(tests/\S+::\S+) {STATUS}\b")
OUTCOME_XDIST = re.compile(rf"^\[gw\d+\] \[\s*\d+%\] {STATUS} (tests/\S+::\S+)")  # pytest-xdist -v
FAILURE = re.compile(r"^(FAILED|ERROR) (tests/\S+::\S+)(?: - (.*))?$")
# pytest-xdist processes at most, when the plugin is there (the GPU image has it): the tests
# are bound by XLA compiles on the host's cores, and share the GPU (no preallocation).
MAX_TEST_PROCESSES = 8
# A failure whose message names this module needs a dataset library the GPU image lacks.
MISSING_DATASETS = "tensorflow_datasets"


def jax_devices() -> dict[str, str]:
    import jax

    device = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": str(jax.device_count()),
    }


def optimizer_step(size, deadline: float, record, out: Path) -> None:
    """Median jitted train step of Adam, Blackbox and STAR, and STAR/Adam."""
    import optimizer_step as bench

    figures = {"devices": jax_devices(), "rounds": size.rounds}
    record(figures)
    result = bench.measure(size.rounds)
    medians = result["median_s"]
    figures.update(
        {
            "median_ms": {name: 1e3 * s for name, s in medians.items()},
            "state_bytes_per_param": result["state_bytes_per_param"],
            "num_params": result["num_params"],
            "star_over_adam": medians["star"] / medians["adam"],
            "star_over_blackbox": medians["star"] / medians["blackbox"],
        }
    )
    record(figures)


def meta_train(size, deadline: float, record, out: Path) -> None:
    """PES steps/s of STAR on the fmnist shape next to the vmapped-Adam ceiling, per P."""
    import meta_train_throughput as bench

    figures = {"devices": jax_devices(), "task": "fmnist_synthetic", "rows": []}
    record(figures)
    for num_pairs in size.pairs:
        row = bench.measure("fmnist_synthetic", "star", num_pairs, size.truncation, size.repeats)
        figures["rows"].append(row)
        record(figures)


def tests(size, deadline: float, record, out: Path) -> None:
    """pytest over ``size.tests`` (log: ``out/pytest.log``), outcomes counted as they come."""
    log_path = out / "pytest.log"
    command = [sys.executable, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider"]
    command += ["--timeout", "300", *test_processes(), *size.tests]
    # COLUMNS: pytest cuts the failure summary lines at the terminal's width (80 in a pipe).
    env = dict(os.environ, TFDS_DATA_DIR=os.path.join(os.environ["HOME"], "tfds"), COLUMNS="400")
    figures = {"devices": jax_devices(), "paths": list(size.tests), "command": " ".join(command)}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            figures["exit"] = process.wait(timeout=max(1.0, deadline - time.time() - MARGIN_S))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            figures["exit"] = "stopped at the time budget"
    figures.update(count_outcomes(log_path.read_text(errors="replace")))
    record(figures)


def test_processes() -> list[str]:
    """pytest-xdist's ``-n`` for half the cores (at most MAX_TEST_PROCESSES), when it is
    installed and that makes at least two; else nothing (one process)."""
    processes = min(MAX_TEST_PROCESSES, (os.cpu_count() or 1) // 2)
    if processes < 2 or importlib.util.find_spec("xdist") is None:
        return []
    return ["-n", str(processes)]


def count_outcomes(log: str) -> dict:
    """Outcome counts of a ``pytest -v -rfE`` log, failures split by cause."""
    outcomes = {}
    for line in log.splitlines():
        match = OUTCOME.match(line)
        if match:
            outcomes[match.group(1)] = match.group(2)
        match = OUTCOME_XDIST.match(line)
        if match:
            outcomes[match.group(2)] = match.group(1)
    reasons = {m.group(2): m.group(3) or "" for m in map(FAILURE.match, log.splitlines()) if m}
    failed = [t for t, o in outcomes.items() if o in ("FAILED", "ERROR")]
    failed += [t for t in reasons if t not in outcomes]  # errors at collection or teardown
    needs_data = [t for t in failed if MISSING_DATASETS in reasons.get(t, "")]
    summary = next((x for x in reversed(log.splitlines()) if x.startswith("=") and " in " in x), "")
    return {
        "counts": dict(Counter(outcomes.values())),
        "failed_needing_tensorflow_datasets": needs_data,
        "failed_other": {t: reasons.get(t, "") for t in failed if t not in needs_data},
        "pytest_summary": summary.strip("= "),
    }
