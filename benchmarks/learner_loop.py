"""The learner's own cost per outer step, apart from the service: for ``cluster_scaling.py``.

Two measurements, each with the former code path next to the current one in the same run:

- :func:`measure_apply` (no Ray): ``Learner.apply`` on N estimates of a theta of P elements
  (STAR's theta plus a group of P - 203 zeros), against :func:`per_estimate_apply`, the former
  rule (a JAX finiteness check and a host sync per estimate, a Python sum over the estimates);
- :func:`measure_loop` (Ray): the learner's loop without the learner actor and the service:
  ``WorkerPool.publish`` / ``gather`` / ``Learner.apply`` in this process, against N stand-in
  workers whose estimates cost nothing, so a round is what the learner and Ray add per outer
  step. Variants: theta by value (the current rule for a small theta), by reference (``put``
  once per step: the former rule, forced with ``inline_bytes=0``), and a 1 MiB theta (put).
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import threading
import time
from typing import Any

import numpy as np

# Elements of theta of the loop's large-theta variant (float32: 1 MiB).
LARGE_THETA = 1 << 18
# Bytes of the estimates of one apply measurement at most (the machine is shared).
MAX_ESTIMATE_BYTES = 256 << 20


def learner_and_theta(elements: int) -> tuple[Any, Any]:
    """A STAR learner of the benchmark's job config and its state with theta grown to
    ``elements`` elements (an extra, undecayed group of zeros; at least STAR's own 203)."""
    import jax

    from star_core.training.config import MetaTrainConfig
    from star_core.training.learner import Learner, LearnerState

    learner = Learner(MetaTrainConfig.from_dict({"tasks": ["nqm"]}))
    theta = jax.device_get(learner.init().theta)
    own = sum(np.size(leaf) for leaf in jax.tree.leaves(theta))
    if elements > own:
        theta = {**theta, "extra": {"w": np.zeros(elements - own, np.float32)}}
    return learner, LearnerState(0, theta, learner.outer_tx.init(theta), 0)


def per_estimate_apply(learner: Any, state: Any, estimates: list) -> Any:
    """The former ``Learner.apply``'s averaging and step, for comparison: ``all_finite`` (JAX)
    and ``bool`` per estimate, a Python sum over the finite ones, then the outer step."""
    import jax

    from star_core.training.outer import all_finite

    finite = [g for g in estimates if bool(all_finite(g))]
    grad = jax.tree.map(lambda *gs: sum(gs[1:], gs[0]) / len(gs), *finite)
    theta, outer_state, applied = learner._outer_step(grad, state.outer_state, state.theta)
    return theta, bool(applied)


def fake_estimates(theta: Any, count: int) -> list:
    import jax

    return [
        jax.tree.map(lambda x, i=i: np.full_like(x, 1e-3 * (-1) ** i), theta) for i in range(count)
    ]


def timed_pair(first: Any, second: Any, repeats: int) -> tuple[float, float]:
    """Median seconds of ``first()`` and of ``second()``, interleaved (one call of each per
    repeat) after one warm-up call of each."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in zip((first, second), times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def measure_apply(sizes: list[int], counts: list[int], repeats: int) -> list[dict]:
    """Milliseconds of ``Learner.apply`` and of :func:`per_estimate_apply` per (P, N) (those
    whose estimates fit in MAX_ESTIMATE_BYTES)."""
    rows = []
    for size in sizes:
        learner, state = learner_and_theta(size)
        for count in counts:
            if 4 * size * count > MAX_ESTIMATE_BYTES:
                continue
            estimates = fake_estimates(state.theta, count)
            current, former = timed_pair(
                functools.partial(learner.apply, state, estimates),
                functools.partial(per_estimate_apply, learner, state, estimates),
                repeats,
            )
            rows.append(
                {
                    "theta": size,
                    "N": count,
                    "apply_ms": 1e3 * current,
                    "per_estimate_ms": 1e3 * former,
                }
            )
            print(
                f"  apply, theta {size}, N {count}: {1e3 * current:.2f} ms (former rule "
                f"{1e3 * former:.2f} ms)",
                flush=True,
            )
    return rows


def measure_loop(worker_class: type, workers: int, rounds: int, meter_class: type) -> list[dict]:
    """Per variant: wall ms per round (publish, gather, apply) and CPU ms per round of this
    process, the workers and Ray's other processes; see the module docstring."""
    import ray

    from services.cluster.learner import WORKER_MAX_RESTARTS
    from services.cluster.pool import RayBackend, WorkerPool

    remote = ray.remote(worker_class).options(num_cpus=1)
    variants = {
        "theta by value (STAR, 1.3 KB)": (203, None),
        "theta by reference (STAR, put per step: former rule)": (203, 0),
        "theta by reference (1 MiB, put per step)": (LARGE_THETA, None),
    }
    actors = [remote.remote({}, index) for index in range(workers)]
    rows = []
    try:
        for label, (size, inline_bytes) in variants.items():
            learner, state = learner_and_theta(size)
            options = {} if inline_bytes is None else {"inline_bytes": inline_bytes}
            pool = WorkerPool(
                RayBackend(), actors.__getitem__, workers, WORKER_MAX_RESTARTS, **options
            )
            rows.append(_loop(label, pool, learner, state, rounds, meter_class))
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
    return rows


def _loop(label: str, pool: Any, learner: Any, state: Any, rounds: int, meter_class: type) -> dict:
    import jax

    stop = threading.Event()
    phases = {"publish": 0.0, "gather": 0.0, "apply": 0.0}
    meter = None
    for step in range(rounds + 2):  # two warm-up rounds (first calls, compilation)
        if step == 2:
            meter, start = meter_class(), time.perf_counter()
            meter.start()
            phases = dict.fromkeys(phases, 0.0)
        t0 = time.perf_counter()
        pool.publish(jax.device_get(state.theta), step)
        t1 = time.perf_counter()
        got = pool.gather(pool.size, 0, stop)
        t2 = time.perf_counter()
        state, _ = learner.apply(state, got.grads)
        t3 = time.perf_counter()
        for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            phases[name] += seconds
    meter.read()
    wall = time.perf_counter() - start
    cpu = meter.by_group()
    row = {
        "variant": label,
        "N": pool.size,
        "round_ms": 1e3 * wall / rounds,
        "phase_ms": {k: 1e3 * v / rounds for k, v in phases.items()},
        "cpu_ms_per_round": {
            ("workers" if k == "compute" else k): 1e3 * v / rounds
            for k, v in cpu.items()
            if k != "compute_wait"
        },
    }
    phase = ", ".join(f"{k} {v:.1f}" for k, v in row["phase_ms"].items())
    cpu_text = ", ".join(f"{k} {v:.0f}" for k, v in row["cpu_ms_per_round"].items())
    print(
        f"  loop, {label}, N {pool.size}: {row['round_ms']:.1f} ms per round ({phase});"
        f" CPU ms per round: {cpu_text}",
        flush=True,
    )
    return row
