"""Benchmark: one jitted inner training step (forward, backward, optimizer update).

Model: a 784-128-128-10 ReLU MLP with softmax cross-entropy at batch 128 on synthetic inputs (the
fmnist_mlp task's shapes). Optimizers: Adam, Blackbox and STAR, each through
``star_core.optimizers.get(name).transform(theta)`` with theta an argument of the jitted step (as
in meta-training). Measurements are interleaved (one step of each optimizer per round), so machine
noise hits all three alike; the medians over rounds are reported.

    JAX_PLATFORMS=cpu python benchmarks/optimizer_step.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from star_core import optimizers

LAYER_SIZES = (784, 128, 128, 10)  # the fmnist_mlp task
BATCH_SIZE = 128
OPTIMIZER_NAMES = ("adam", "blackbox", "star")
WARMUP_STEPS = 5  # untimed steps per optimizer after compilation


def init_mlp(key: jax.Array) -> dict[str, jax.Array]:
    params = {}
    keys = jax.random.split(key, len(LAYER_SIZES) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, LAYER_SIZES[:-1], LAYER_SIZES[1:], strict=True)):
        params[f"w{i}"] = jax.random.normal(k, (n_in, n_out)) / math.sqrt(n_in)
        params[f"b{i}"] = jnp.zeros((n_out,))
    return params


def loss_fn(params, images, labels):
    hidden = images
    for i in range(len(LAYER_SIZES) - 1):
        hidden = hidden @ params[f"w{i}"] + params[f"b{i}"]
        if i < len(LAYER_SIZES) - 2:
            hidden = jax.nn.relu(hidden)
    return optax.softmax_cross_entropy_with_integer_labels(hidden, labels).mean()


def make_step(opt):
    @jax.jit
    def step(theta, params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = opt.transform(theta).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(rounds: int) -> dict:
    """Median seconds per jitted step of each optimizer over ``rounds`` interleaved rounds,
    its optimizer state in bytes per parameter, and the model's parameter count."""
    key_params, key_theta, key_images, key_labels = jax.random.split(jax.random.key(0), 4)
    params = init_mlp(key_params)
    images = jax.random.normal(key_images, (BATCH_SIZE, LAYER_SIZES[0]))
    labels = jax.random.randint(key_labels, (BATCH_SIZE,), 0, LAYER_SIZES[-1])
    num_params = sum(p.size for p in jax.tree.leaves(params))

    runs = {}
    for name in OPTIMIZER_NAMES:
        opt = optimizers.get(name)
        theta = opt.init_meta_params(key_theta)
        state = opt.transform(theta).init(params)
        step = make_step(opt)
        carry = (params, state)
        for _ in range(WARMUP_STEPS):
            carry = step(theta, *carry, images, labels)[:2]
        jax.block_until_ready(carry)
        state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
        runs[name] = {
            "step": step,
            "theta": theta,
            "carry": carry,
            "times": [],
            "state_bytes_per_param": state_bytes / num_params,
        }

    for _ in range(rounds):
        for run in runs.values():
            start = time.perf_counter()
            out = run["step"](run["theta"], *run["carry"], images, labels)
            jax.block_until_ready(out)
            run["times"].append(time.perf_counter() - start)
            run["carry"] = out[:2]

    return {
        "num_params": num_params,
        "median_s": {name: statistics.median(run["times"]) for name, run in runs.items()},
        "state_bytes_per_param": {name: run["state_bytes_per_param"] for name, run in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="timed steps per optimizer")
    args = parser.parse_args()

    result = measure(args.rounds)
    print(
        f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} jax={jax.__version__} "
        f"backend={jax.default_backend()}"
    )
    print(
        f"model: MLP {'-'.join(map(str, LAYER_SIZES))}, batch {BATCH_SIZE}, "
        f"{result['num_params']} params; {args.rounds} interleaved rounds"
    )
    medians = {name: seconds * 1e3 for name, seconds in result["median_s"].items()}
    for name, state_bytes in result["state_bytes_per_param"].items():
        print(f"{name:>9}: median {medians[name]:.3f} ms/step, state {state_bytes:.1f} bytes/param")
    print(f"STAR/Adam     = {medians['star'] / medians['adam']:.2f}  (target <= 1.6)")
    print(f"STAR/Blackbox = {medians['star'] / medians['blackbox']:.2f}  (target <= 1.1)")


if __name__ == "__main__":
    main()
