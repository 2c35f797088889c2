"""Where every random number of a meta-training run comes from.

A run's randomness is a function of its ``seed`` and, per estimate, of the outer step ``s`` and
the index ``w`` of the worker that computes it, nothing else::

    theta_key, estimator_key, step_key, schedule_key = split(key(seed), 4)
    estimate key of (s, w)          = fold_in(fold_in(step_key, s), w)
    task of (s, w)                  = uniform over the tasks, drawn from
                                      fold_in(fold_in(schedule_key, s), w)  (0 with one task)
    estimator state of (w, task i)  = initialized from fold_in(fold_in(estimator_key, w), i)

so two workers never draw the same perturbations, a worker draws new ones at every step, and a
run is reproducible. The single-process loop (``meta_train``) is the one-worker case (``w = 0``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax


class RunKeys(NamedTuple):
    """The four independent root keys of a run (see the module docstring)."""

    theta: jax.Array
    estimator: jax.Array
    step: jax.Array
    schedule: jax.Array


def run_keys(seed: int) -> RunKeys:
    """The root keys of the run with seed ``seed``."""
    return RunKeys(*jax.random.split(jax.random.key(seed), 4))


def estimate_key(keys: RunKeys, step: int, worker: int) -> jax.Array:
    """The key of worker ``worker``'s estimate at outer step ``step``."""
    return jax.random.fold_in(jax.random.fold_in(keys.step, step), worker)


def task_index(keys: RunKeys, step: int, worker: int, num_tasks: int) -> int:
    """The task of worker ``worker`` at outer step ``step``: uniform over ``num_tasks``."""
    if num_tasks == 1:
        return 0
    key = jax.random.fold_in(jax.random.fold_in(keys.schedule, step), worker)
    return int(jax.random.randint(key, (), 0, num_tasks))


def estimator_init_key(keys: RunKeys, worker: int, task: int) -> jax.Array:
    """The key that initializes worker ``worker``'s estimator state for task index ``task``."""
    return jax.random.fold_in(jax.random.fold_in(keys.estimator, worker), task)
