"""Data pipeline throughput next to training throughput, for 16 task copies.

For each task: (a) batches/s of ``task.batches(seed, copies=16)``, creating a fresh iterator
every ``TRUNCATION`` batches as the meta-training estimators do; (b) steps/s of one jitted Adam
training step vmapped over the 16 copies (batches already on the device, so (b) is compute only).
Target: (a) >= 10 x (b), so data never bounds meta-training.

Run: ``JAX_PLATFORMS=cpu python benchmarks/data_pipeline.py [--tasks digits_mlp text_transformer]``
"""

from __future__ import annotations

import argparse
import time

import jax
import optax

from star_core import tasks

COPIES = 16
# Batches per fresh iterator, like one truncation of the estimators.
TRUNCATION = 50
# Learning rate of the timed Adam step (its value does not affect the timing).
LEARNING_RATE = 1e-3


def data_rate(task, num_batches: int) -> float:
    next(task.batches(0, copies=COPIES))  # Load and cache the dataset outside the timing.
    start = time.perf_counter()
    for seed in range(num_batches // TRUNCATION):
        iterator = task.batches(seed, copies=COPIES)
        for _ in range(TRUNCATION):
            next(iterator)
    return (num_batches // TRUNCATION) * TRUNCATION / (time.perf_counter() - start)


def train_rate(task, num_steps: int) -> float:
    keys = jax.random.split(jax.random.PRNGKey(0), COPIES)
    params = jax.vmap(task.init)(keys)
    optimizer = optax.adam(LEARNING_RATE)
    state = jax.vmap(optimizer.init)(params)

    def one_step(params, state, key, batch):
        grads = jax.grad(task.loss)(params, key, batch)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(jax.vmap(one_step))
    batch = jax.device_put(next(task.batches(0, copies=COPIES)))
    params, state = jax.block_until_ready(step(params, state, keys, batch))  # Compile.
    start = time.perf_counter()
    for _ in range(num_steps):
        params, state = step(params, state, keys, batch)
    jax.block_until_ready(params)
    return num_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp", "text_transformer"])
    parser.add_argument("--batches", type=int, default=1000, help="batches timed per task")
    parser.add_argument("--steps", type=int, default=50, help="training steps timed per task")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, copies: {COPIES}")
    print(f"{'task':<18}{'data batches/s':>16}{'train steps/s':>15}{'ratio':>8}")
    for name in args.tasks:
        task = tasks.get(name)
        data, train = data_rate(task, args.batches), train_rate(task, args.steps)
        print(f"{name:<18}{data:>16.1f}{train:>15.2f}{data / train:>7.0f}x")


if __name__ == "__main__":
    main()
