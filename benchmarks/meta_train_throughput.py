"""Meta-training throughput: inner steps per second of PES, next to a vmapped-Adam ceiling.

For each task and number of antithetic pairs P, one PES truncation runs ``2 P K`` inner steps
(both signs of every pair, K steps each) of the learned optimizer, plus the estimator's own
work (perturbations, resets, the gradient). The ceiling is the same ``2 P K`` steps of plain
Adam training of ``2P`` models, vmapped and scanned the same way, on the same kind of data, in
the same process. Both are timed two ways:

- end to end: host data (``task.batches(seed, copies=P)``, K batches stacked) + the jitted
  truncation + waiting for the result, as ``Estimator.estimate`` does in meta-training;
- kernel: the jitted truncation alone on batches already on the device.

Tasks: ``digits_mlp`` (real embedded data, 64-128-128-10, batch 128) and ``fmnist_synthetic``
(the ``fmnist_mlp`` model, 784-128-128-10, batch 128, on random uint8 images drawn per batch, so
no dataset is needed). Target: PES >= 0.5x the Adam ceiling.

Usage::

    python benchmarks/meta_train_throughput.py                       # all tasks, P = 8 and 32
    python benchmarks/meta_train_throughput.py --tasks digits_mlp --pairs 8 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from star_core import optimizers, tasks
from star_core.estimators import EstimatorConfig, make_estimator
from star_core.estimators.unroll import tile_signs

ADAM_LEARNING_RATE = 1e-3  # ceiling optimizer; its value does not change the cost
DEFAULT_HORIZON = 2000  # default episode length T (resets are 1/T of the iterations)
SEED = 0


@dataclasses.dataclass(frozen=True)
class SyntheticImages:
    """A task with ``model``'s init/loss and random uint8 images of ``shape`` as data."""

    model: Any
    name: str = "fmnist_synthetic"
    shape: tuple[int, ...] = (28, 28, 1)
    num_classes: int = 10
    batch_size: int = 128

    @property
    def max_loss(self) -> float:
        return self.model.max_loss

    def init(self, key):
        return self.model.init(key)

    def loss(self, params, key, batch):
        return self.model.loss(params, key, batch)

    def normalizer(self, loss):
        return self.model.normalizer(loss)

    def batches(self, seed: int, split: str = "train", copies: int | None = None):
        rng = np.random.default_rng(seed)
        lead = (copies, self.batch_size) if copies else (self.batch_size,)
        while True:
            yield {
                "image": rng.integers(0, 256, lead + self.shape, dtype=np.uint8),
                "label": rng.integers(0, self.num_classes, lead, dtype=np.int32),
            }


def make_task(name: str):
    if name == "fmnist_synthetic":
        return SyntheticImages(model=tasks.get("fmnist_mlp"))
    return tasks.get(name)


def adam_unroll(task, num_pairs: int):
    """Jitted ``K`` Adam steps of ``2P`` models on ``[K, P]`` batches (+/- copies share data)."""
    tx = optax.adam(ADAM_LEARNING_RATE)

    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(task.loss)(params, key, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, task.normalizer(loss)

    def run(params, opt_state, batches, key):
        keys = jax.random.split(key, jax.tree.leaves(batches)[0].shape[0] * 2 * num_pairs)
        keys = keys.reshape((-1, 2 * num_pairs) + keys.shape[1:])

        def body(carry, xs):
            params, opt_state = carry
            batch, key = xs
            params, opt_state, loss = jax.vmap(step)(params, opt_state, tile_signs(batch), key)
            return (params, opt_state), jnp.mean(loss)

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (batches, keys))
        return params, opt_state, jnp.mean(losses)

    def init(key):
        params = jax.vmap(task.init)(jax.random.split(key, 2 * num_pairs))
        return params, jax.vmap(tx.init)(params)

    return init, jax.jit(run, donate_argnums=(0, 1))


def _interleaved_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in rounds (one call of each per round,
    after one warm-up call that compiles), so that machine load drifts hit all alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def measure(task_name: str, optimizer: str, num_pairs: int, truncation: int, repeats: int):
    """Steps per second of PES and of the Adam ceiling (end to end and kernel only)."""
    task, lopt = make_task(task_name), optimizers.get(optimizer)
    config = EstimatorConfig("pes", 0.01, truncation, DEFAULT_HORIZON, num_pairs)
    estimator = make_estimator(task, lopt, config)
    keys = iter(jax.random.split(jax.random.key(SEED), 8 * repeats + 8))
    theta = lopt.init_meta_params(next(keys))
    pes = {"state": estimator.init_state(theta, next(keys))}
    device_batches = jax.device_put(estimator.batch_source(SEED, num_pairs, truncation))

    def pes_end_to_end():
        grad, pes["state"], _ = estimator.estimate(theta, next(keys), pes["state"])
        jax.block_until_ready(grad)

    def pes_kernel():
        out = estimator._truncation(theta, pes["state"], device_batches, next(keys))
        pes["state"] = out[1]
        jax.block_until_ready(out)

    init, run = adam_unroll(task, num_pairs)
    adam = {"state": init(next(keys))}

    def adam_step(batches):
        params, opt_state, loss = run(*adam["state"], batches, next(keys))
        adam["state"] = (params, opt_state)
        jax.block_until_ready(loss)

    seeds = iter(range(SEED + 1, SEED + 2 * repeats + 2))

    def adam_end_to_end():
        adam_step(estimator.batch_source(next(seeds), num_pairs, truncation))

    steps = 2 * num_pairs * truncation
    seconds = _interleaved_seconds(
        {
            "pes_end_to_end": pes_end_to_end,
            "adam_end_to_end": adam_end_to_end,
            "pes_kernel": pes_kernel,
            "adam_kernel": lambda: adam_step(device_batches),
        },
        repeats,
    )
    row = {"task": task_name, "optimizer": optimizer, "pairs": num_pairs, "K": truncation}
    row.update({name: steps / sec for name, sec in seconds.items()})
    row["ratio_end_to_end"] = row["pes_end_to_end"] / row["adam_end_to_end"]
    row["ratio_kernel"] = row["pes_kernel"] / row["adam_kernel"]
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores visible, jax {jax.__version__}, "
        f"{device.platform}: {device.device_kind}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits_mlp", "fmnist_synthetic"])
    parser.add_argument("--pairs", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--truncation", type=int, default=50, help="inner steps K per truncation")
    parser.add_argument("--optimizer", default="star")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    header = (
        "| task | P | K | PES steps/s (end to end) | Adam steps/s (end to end) | ratio "
        "| PES steps/s (kernel) | Adam steps/s (kernel) | ratio |"
    )
    print(header)
    print("|---" * 9 + "|")
    rows = []
    for task_name in args.tasks:
        for num_pairs in args.pairs:
            row = measure(task_name, args.optimizer, num_pairs, args.truncation, args.repeats)
            rows.append(row)
            print(
                f"| {task_name} | {num_pairs} | {args.truncation} | {row['pes_end_to_end']:.0f} "
                f"| {row['adam_end_to_end']:.0f} | {row['ratio_end_to_end']:.2f} "
                f"| {row['pes_kernel']:.0f} | {row['adam_kernel']:.0f} "
                f"| {row['ratio_kernel']:.2f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
