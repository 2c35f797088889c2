"""Batches for many task copies at once, each copy with its own sample order.

The meta-training estimators ``jax.vmap`` over K task copies, so a batch for K copies is a dict
of arrays with a leading axis K. Orders are drawn without a Python loop per copy:

- in-memory datasets (N examples): each epoch draws K independent permutations at once as
  ``argsort(U)`` with ``U ~ Uniform(0, 1)^(K x N)``; batch b of the epoch is columns
  ``[b B, (b + 1) B)`` of that K x N index matrix, gathered with one fancy index per array
  (the last partial batch of an epoch is dropped);
- datasets read from disk per batch (too large for memory): indices are drawn i.i.d. uniformly,
  a (K, B) matrix per batch, and the K * B records are read in one pass.

Every order is a deterministic function of ``(seed, split, copies)``: the numpy generator is
seeded with that triple. ``copies=None`` gives batches without the leading axis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

# Seed-stream tags of the splits, so that train and test orders from one seed differ.
SPLIT_TAGS = {"train": 0, "test": 1, "validation": 2}
# numpy's SeedSequence takes non-negative integers; seeds are reduced modulo 2**64.
SEED_MODULUS = 2**64


def order_rng(seed: int, split: str, copies: int | None) -> np.random.Generator:
    """The generator of the sample orders of ``(seed, split, copies)``."""
    if split not in SPLIT_TAGS:
        raise ValueError(f"split must be one of {sorted(SPLIT_TAGS)}, got {split!r}")
    if copies is not None and (not isinstance(copies, int) or copies < 1):
        raise ValueError(f"copies must be None or a positive integer, got {copies!r}")
    entropy = [int(seed) % SEED_MODULUS, SPLIT_TAGS[split], 0 if copies is None else copies]
    return np.random.default_rng(entropy)


def permutation_indices(
    num_examples: int, batch_size: int, rng: np.random.Generator, num_copies: int
) -> Iterator[np.ndarray]:
    """Endless (num_copies, batch_size) index matrices, one fresh permutation per copy per epoch."""
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size must be at most the split size {num_examples}, got {batch_size}"
        )
    per_epoch = num_examples // batch_size
    while True:
        orders = np.argsort(rng.random((num_copies, num_examples)), axis=1)
        for b in range(per_epoch):
            yield orders[:, b * batch_size : (b + 1) * batch_size]


def sampled_indices(
    num_examples: int, batch_size: int, rng: np.random.Generator, num_copies: int
) -> Iterator[np.ndarray]:
    """Endless (num_copies, batch_size) matrices of indices drawn i.i.d. uniformly."""
    while True:
        yield rng.integers(0, num_examples, size=(num_copies, batch_size))


def array_batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    seed: int,
    split: str,
    copies: int | None,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of in-memory ``arrays`` (all with the same leading size N), permuted per epoch."""
    rng = order_rng(seed, split, copies)
    num_examples = len(next(iter(arrays.values())))
    for index in permutation_indices(num_examples, batch_size, rng, copies or 1):
        if copies is None:
            index = index[0]
        yield {name: values[index] for name, values in arrays.items()}


def record_batches(
    num_examples: int,
    read: Callable[[np.ndarray], dict[str, np.ndarray]],
    batch_size: int,
    seed: int,
    split: str,
    copies: int | None,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches read from disk: ``read(flat_indices)`` returns arrays with leading size len(idx)."""
    rng = order_rng(seed, split, copies)
    for index in sampled_indices(num_examples, batch_size, rng, copies or 1):
        flat = read(index.reshape(-1))
        shape = (batch_size,) if copies is None else (copies, batch_size)
        yield {name: values.reshape(shape + values.shape[1:]) for name, values in flat.items()}
