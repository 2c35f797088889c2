"""Meta-training the linear learned optimizer P on the noisy quadratic (paper Figure 2b, 2c).

Harrison, Metz, Sohl-Dickstein, NeurIPS 2022, Section 4. With the nominal step ``alpha`` fixed,
P is trained with Adam on the meta-loss ``L(P; T) = 1/T sum_{t=1}^T E[l_t(phi_t)]`` (eq. 8), using
either the exact gradient of the closed form (``estimator="closed_form"``) or the average of
``num_samples`` single-trajectory gradients (``estimator="sample"``, the unbiased Monte-Carlo
estimate whose variance Figure 2a plots). Non-finite gradient estimates are dropped (the step
leaves P unchanged), as in the outer step of docs/algorithm.md. Every iteration records the exact
meta-loss of the current P and ``max_i |lambda_i(A)|`` of its dynamics matrix.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from star_core.nqm.closed_form import expected_meta_loss, sample_meta_loss
from star_core.nqm.dynamics import dynamics_matrix

# Meta-gradient estimators: exact gradient of eq. 8, or Monte-Carlo gradient of sampled unrolls.
ESTIMATORS = ("closed_form", "sample")


@dataclasses.dataclass(frozen=True)
class NQMMetaTrainConfig:
    """Static settings of one meta-training run."""

    horizon: int = 50  # T of the meta-loss (Figure 2c uses T = 50)
    num_iterations: int = 2000
    learning_rate: float = 1e-2  # Adam step size on the entries of P
    estimator: str = "closed_form"
    num_samples: int = 1  # trajectories averaged per gradient when estimator == "sample"
    preconditioned: bool = False  # the H^{-1/2} dynamics of eq. 12

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        for name in ("horizon", "num_iterations", "num_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


class NQMMetaTrainResult(NamedTuple):
    """Final P and per-iteration traces (values before that iteration's update)."""

    P: jax.Array
    meta_loss: jax.Array  # exact meta-loss (eq. 8) of P at each iteration
    spectral_radius: jax.Array  # max |lambda(A)| at each iteration


def _gradient(
    config: NQMMetaTrainConfig, alpha: ArrayLike, P: jax.Array, problem: tuple, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Meta-gradient estimate of the configured kind, and the exact meta-loss of P."""
    H, phi0, sigma_xi, phi0_cov = problem
    exact = functools.partial(
        expected_meta_loss,
        H=H,
        phi0=phi0,
        sigma_xi=sigma_xi,
        T=config.horizon,
        preconditioned=config.preconditioned,
        phi0_cov=phi0_cov,
    )
    if config.estimator == "closed_form":
        loss, grad = jax.value_and_grad(lambda p: exact(alpha, p))(P)
        return loss, grad

    def one_sample(sample_key: jax.Array) -> jax.Array:
        return jax.grad(
            lambda p: sample_meta_loss(
                sample_key,
                alpha,
                p,
                H,
                phi0,
                sigma_xi,
                config.horizon,
                config.preconditioned,
                phi0_cov,
            )
        )(P)

    keys = jax.random.split(key, config.num_samples)
    grad = jnp.mean(jax.vmap(one_sample)(keys), axis=0)
    return exact(alpha, P), grad


@functools.partial(jax.jit, static_argnames=("config",))
def _run(
    config: NQMMetaTrainConfig, alpha: ArrayLike, P0: jax.Array, problem: tuple, key: jax.Array
) -> NQMMetaTrainResult:
    optimizer = optax.adam(config.learning_rate)

    def iteration(
        carry: tuple[jax.Array, Any], iteration_key: jax.Array
    ) -> tuple[tuple[jax.Array, Any], tuple[jax.Array, jax.Array]]:
        P, opt_state = carry
        loss, grad = _gradient(config, alpha, P, problem, iteration_key)
        updates, new_opt_state = optimizer.update(grad, opt_state, P)
        finite = jnp.all(jnp.isfinite(grad))
        P_next = jnp.where(finite, optax.apply_updates(P, updates), P)
        opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), new_opt_state, opt_state
        )
        A = dynamics_matrix(alpha, P, problem[0], config.preconditioned)
        radius = jnp.max(jnp.abs(jnp.linalg.eigvals(A)))
        return (P_next, opt_state), (loss, radius)

    keys = jax.random.split(key, config.num_iterations)
    (P, _), (losses, radii) = jax.lax.scan(iteration, (P0, optimizer.init(P0)), keys)
    return NQMMetaTrainResult(P=P, meta_loss=losses, spectral_radius=radii)


def meta_train(
    alpha: ArrayLike,
    P0: ArrayLike,
    H: ArrayLike,
    phi0: ArrayLike,
    sigma_xi: ArrayLike,
    config: NQMMetaTrainConfig,
    key: jax.Array | None = None,
    phi0_cov: ArrayLike | None = None,
) -> NQMMetaTrainResult:
    """Meta-train P with Adam from ``P0`` at a fixed nominal step ``alpha``.

    Args:
      alpha: nominal step size.
      P0: initial ``N x N`` learned preconditioner (its dtype is used throughout).
      H, phi0, sigma_xi: the noisy quadratic (see :func:`expected_meta_loss`).
      config: a :class:`NQMMetaTrainConfig`.
      key: PRNG key, required when ``config.estimator == "sample"`` (split once per iteration).
      phi0_cov: optional covariance of a random start ``phi_0 ~ N(phi0, phi0_cov)``.

    Returns:
      :class:`NQMMetaTrainResult` with the final P and the per-iteration exact meta-loss and
      spectral radius ``max |lambda(A)|``.
    """
    if config.estimator == "sample" and key is None:
        raise ValueError("key is required when estimator == 'sample'")
    if key is None:
        key = jax.random.key(0)  # unused by the closed-form estimator; only fixes shapes
    P0 = jnp.asarray(P0)
    if phi0_cov is None:
        phi0_cov = jnp.zeros_like(P0)
    problem = tuple(jnp.asarray(x, dtype=P0.dtype) for x in (H, phi0, sigma_xi, phi0_cov))
    alpha = jnp.asarray(alpha, dtype=P0.dtype)
    return _run(config, alpha, P0, problem, key)
