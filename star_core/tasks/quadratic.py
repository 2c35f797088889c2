"""``nqm``: the noisy quadratic model of paper Section 4 as an ordinary task.

Loss at a step: ``l(phi) = 1/2 (phi - xi)^T H (phi - xi)`` with diagonal ``H`` whose eigenvalues
are log-spaced in ``[curvature_min, 1]`` and noise ``xi ~ N(0, noise_scale^2 I)``. The noise is
the task's "data": ``batches`` yields ``{"xi": float32 (dim,)}`` per step, so the loss is a pure
function of ``(params, batch)`` like every other task. ``phi_0 ~ N(0, init_scale^2 I)``.

``max_loss`` is 1.5 times the expected loss at initialization,
``E l(phi_0) = 1/2 tr(H) (init_scale^2 + noise_scale^2)``.

(Written here, apart from ``star_core.nqm``, which is a leaf that no task may import.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from star_core.tasks import base
from star_core.tasks.data import batching

# Multiple of the expected initial loss at which the normalized loss is capped.
NQM_MAX_LOSS_FACTOR = 1.5


@dataclasses.dataclass(frozen=True)
class NoisyQuadratic:
    name: str = "nqm"
    dim: int = 10
    curvature_min: float = 1e-2
    noise_scale: float = 1.0
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")
        if not 0.0 < self.curvature_min <= 1.0:
            raise ValueError(f"curvature_min must be in (0, 1], got {self.curvature_min!r}")
        for field in ("noise_scale", "init_scale"):
            if getattr(self, field) < 0.0:
                raise ValueError(f"{field} must be non-negative, got {getattr(self, field)!r}")

    @property
    def curvatures(self) -> np.ndarray:
        """The eigenvalues of H, log-spaced from curvature_min to 1."""
        return np.geomspace(self.curvature_min, 1.0, self.dim).astype(np.float32)

    @property
    def max_loss(self) -> float:
        expected = 0.5 * float(self.curvatures.sum()) * (self.init_scale**2 + self.noise_scale**2)
        return NQM_MAX_LOSS_FACTOR * expected

    def init(self, key: jax.Array) -> base.Params:
        return {"phi": self.init_scale * jax.random.normal(key, (self.dim,), jnp.float32)}

    def loss(self, params: base.Params, key: jax.Array, batch: base.Batch) -> jax.Array:
        del key  # The noise arrives in the batch.
        diff = params["phi"] - jnp.asarray(batch["xi"], jnp.float32)
        return 0.5 * jnp.sum(jnp.asarray(self.curvatures) * diff**2)

    def normalizer(self, loss: jax.Array) -> jax.Array:
        return base.normalize_loss(loss, self.max_loss)

    def batches(
        self, seed: int, split: str = "train", copies: int | None = None
    ) -> Iterator[base.Batch]:
        rng = batching.order_rng(seed, split, copies)
        shape = (self.dim,) if copies is None else (copies, self.dim)
        return _noise_stream(rng, shape, self.noise_scale)


def _noise_stream(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float
) -> Iterator[base.Batch]:
    while True:
        yield {"xi": (scale * rng.standard_normal(shape)).astype(np.float32)}
