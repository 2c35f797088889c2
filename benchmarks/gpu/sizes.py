"""The sizes of the GPU measurement's parts (``measure.py``) and its goals.

``full`` is for the accelerator machine (the shapes of ``optimizer_step.py`` and
``meta_train_throughput.py``, service jobs of 8 pairs x 50 steps per worker); ``small`` runs
the same code in a few minutes on two shared CPU cores, to prove the script where no GPU is.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Size:
    rounds: int  # optimizer_step: timed interleaved rounds (one step of each optimizer)
    pairs: tuple[int, ...]  # meta_train: antithetic pairs P, one measurement each
    truncation: int  # meta_train: inner steps K per PES truncation
    repeats: int  # meta_train: timed interleaved rounds after the compiling warm-up
    workers: tuple[int, ...]  # service: one job per entry, with that many workers
    job_horizon: int  # service: the nqm jobs' PES episode length T
    job_truncation: int  # service: inner steps K per truncation
    job_pairs: int  # service: antithetic pairs per worker estimate
    discard: int  # service: first outer steps dropped (actor start-up, JIT compile)
    window_s: float  # service: seconds of steady state measured after them
    min_steps: int  # service: outer steps measured at least (when the job's time allows)
    tests: tuple[str, ...]  # tests: pytest paths


# The core's tests, those closest to the GPU's numerics first (a run cut at its time share
# has counted them).
CORE_TESTS = ("tests/optimizers", "tests/features", "tests/estimators", "tests/training")

SIZES = {
    "full": Size(
        rounds=300,
        pairs=(8, 32),
        truncation=50,
        repeats=5,
        workers=(1, 2, 4, 8),
        job_horizon=1000,
        job_truncation=50,
        job_pairs=8,
        discard=5,
        window_s=12.0,
        min_steps=5,
        tests=CORE_TESTS,
    ),
    "small": Size(
        rounds=30,
        pairs=(2,),
        truncation=10,
        repeats=2,
        workers=(1, 2, 4, 8),
        job_horizon=100,
        job_truncation=10,
        job_pairs=2,
        discard=3,
        window_s=6.0,
        min_steps=3,
        tests=("tests/features", "tests/optimizers/test_contract.py"),
    ),
}

# name: (what is compared, target, whether higher is better); the targets are for one H200.
GOALS = {
    "star_over_adam": ("STAR / Adam, jitted train step (fmnist_mlp)", 1.3, False),
    "pes_over_adam": ("PES / vmapped-Adam ceiling, steps/s (fmnist shape)", 0.7, True),
    "workers_8_over_1": ("service inner steps/s, 8 workers / 1 worker, one GPU", 4.0, True),
}
