"""The Task protocol, the loss normalizer and the shared loss functions.

A task is the inner problem a learned optimizer trains (paper Section 5; the nouns follow
google/learned_optimization): ``init(key) -> params`` draws parameters (a plain dict pytree),
``loss(params, key, batch) -> scalar`` is pure and vmappable, and ``batches(seed, split, copies)``
yields dicts of numpy arrays. With ``copies=K`` every array carries a leading axis K and each
copy follows its own sample order, so the meta-training estimators can ``jax.vmap`` over copies.

Loss normalization (docs/algorithm.md): so that one diverging inner run cannot dominate a
meta-gradient, the per-step loss is clipped to ``[0, max_loss]`` and NaN/inf become ``max_loss``:

    normalizer(l) = max_loss            if l is NaN or +-inf
                    clip(l, 0, max_loss) otherwise

with ``max_loss = 1.5 ln(num_classes)`` for classifiers (and for byte-level language models,
whose "classes" are the vocabulary); other tasks define their own maximum.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

# Multiple of the chance-level loss ln(num_classes) at which a classifier's loss is capped.
CLASSIFIER_MAX_LOSS_FACTOR = 1.5

Params = dict[str, Any]
Batch = dict[str, np.ndarray]


@runtime_checkable
class Task(Protocol):
    """What every inner problem provides (see the module docstring)."""

    # Every task is a frozen dataclass (``tasks.get`` replaces its fields).
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def name(self) -> str: ...

    @property
    def max_loss(self) -> float: ...

    def init(self, key: jax.Array) -> Params: ...

    def loss(self, params: Params, key: jax.Array, batch: Batch) -> jax.Array: ...

    def batches(
        self, seed: int, split: str = "train", copies: int | None = None
    ) -> Iterator[Batch]: ...

    def normalizer(self, loss: jax.Array) -> jax.Array: ...


def classifier_max_loss(num_classes: int) -> float:
    """``1.5 ln(num_classes)``: the cap of a classifier's normalized loss."""
    return CLASSIFIER_MAX_LOSS_FACTOR * math.log(num_classes)


def normalize_loss(loss: jax.Array, max_loss: float) -> jax.Array:
    """Clip ``loss`` to ``[0, max_loss]`` and map NaN/inf to ``max_loss`` (jit/scan-safe)."""
    loss = jnp.asarray(loss)
    return jnp.where(jnp.isfinite(loss), jnp.clip(loss, 0.0, max_loss), max_loss)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over the batch of ``-log softmax(logits)[label]``."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)
    return -jnp.mean(picked)


def masked_token_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Token cross-entropy averaged over the positions where ``mask`` is 1."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mask = mask.astype(log_probs.dtype)
    return -jnp.sum(picked * mask) / jnp.maximum(jnp.sum(mask), 1.0)
