"""Data of the paper's Figure 2: meta-gradient variance and meta-training versus the nominal step.

Harrison, Metz, Sohl-Dickstein, NeurIPS 2022, Figure 2 and Section 4.1.

- (a) ``tr Var[grad_P Lhat(P; T)]`` of the single-trajectory meta-gradient (``jax.grad`` through
  :func:`sample_meta_loss`) at a fixed P, for alpha on a grid over ``[0, 2 / lambda_max(H)]`` and
  horizons T. The variance is estimated from ``num_samples`` trajectories (unbiased, ddof = 1) and
  kept as log10 so that exploding values (``rho(A) > 1`` grows like ``rho^{2T}``) stay finite.
- (b), (c) max |lambda(A)| and the exact meta-loss (T = 50) while Adam meta-trains P from the same
  start for ``2 alpha / lambda_max(H)`` in {0, 0.1, 0.2, 0.3, 0.4}; the reference is the optimal
  meta-loss, found by L-BFGS on ``M = alpha I + P`` (the optimum only depends on M).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from star_core.nqm.closed_form import expected_meta_loss, sample_meta_loss
from star_core.nqm.meta_train import NQMMetaTrainConfig, meta_train
from star_core.nqm.problem import NQMProblem
from star_core.nqm.stability import theorem1_holds

# Largest |eigenvalue| of the random symmetric start P0 of Figure 2: with lambda_max(H) = 1,
# Theorem 1 holds at P0 for alpha in [-lambda_min(P0), 2 - lambda_max(P0)], about [0.2, 1.8].
P0_SCALE = 0.2
# 2 alpha / lambda_max(H) for the meta-training curves of Figure 2b, 2c (the paper's values).
TRAINING_ALPHA_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4)
# "Near-optimal": meta-loss within this relative gap of the optimum.
NEAR_OPTIMAL_GAP = 0.05


def random_symmetric_start(key, n: int) -> np.ndarray:
    """Random symmetric P0 scaled so that its largest |eigenvalue| is ``P0_SCALE``."""
    gaussian = np.asarray(jax.random.normal(key, (n, n)), dtype=np.float64)
    symmetric = 0.5 * (gaussian + gaussian.T)
    return P0_SCALE * symmetric / np.max(np.abs(np.linalg.eigvalsh(symmetric)))


def _log10_trace_variance(grads: np.ndarray) -> float:
    """log10 of the summed unbiased variance of a stack of gradient samples, overflow-safe."""
    flat = grads.reshape(grads.shape[0], -1)
    if not np.all(np.isfinite(flat)):
        return float("inf")
    scale = float(np.max(np.abs(flat)))
    if scale == 0.0:
        return float("-inf")
    scaled = flat / scale
    variance = float(np.sum(np.var(scaled, axis=0, ddof=1)))
    return 2.0 * np.log10(scale) + np.log10(variance) if variance > 0 else float("-inf")


@functools.partial(jax.jit, static_argnames=("horizon",))
def _gradient_samples(keys, alpha, P, H, phi0, sigma_xi, phi0_cov, horizon):
    def one(key):
        return jax.grad(
            lambda p: sample_meta_loss(key, alpha, p, H, phi0, sigma_xi, horizon, False, phi0_cov)
        )(P)

    return jax.vmap(one)(keys)


def gradient_variance(problem: NQMProblem, P, alphas, horizon: int, num_samples: int, key):
    """log10 tr Var of the single-trajectory meta-gradient for each alpha (one horizon)."""
    args = tuple(jnp.asarray(x) for x in (P, *problem[:3], problem.phi0_cov))
    values = []
    for alpha_key, alpha in zip(jax.random.split(key, len(alphas)), alphas, strict=True):
        keys = jax.random.split(alpha_key, num_samples)
        grads = _gradient_samples(keys, jnp.asarray(alpha), *args, horizon)
        values.append(_log10_trace_variance(np.asarray(grads, dtype=np.float64)))
    return values


def optimal_meta_loss(problem: NQMProblem, horizon: int, max_iterations: int = 2000) -> float:
    """Minimum over M of the exact meta-loss with ``alpha I + P = M``, by L-BFGS from ``M = 0``."""
    n = problem.H.shape[0]
    objective = jax.jit(
        jax.value_and_grad(
            lambda m: expected_meta_loss(
                0.0,
                m.reshape(n, n),
                problem.H,
                problem.phi0,
                problem.sigma_xi,
                horizon,
                phi0_cov=problem.phi0_cov,
            )
        )
    )

    def fun(m):
        value, grad = objective(jnp.asarray(m))
        return float(value), np.asarray(grad, dtype=np.float64)

    result = scipy.optimize.minimize(
        fun, np.zeros(n * n), jac=True, method="L-BFGS-B", options={"maxiter": max_iterations}
    )
    return float(result.fun)


def first_iteration_below(losses: np.ndarray, threshold: float) -> int | None:
    """First meta-iteration whose meta-loss is at most ``threshold`` (None if never)."""
    hits = np.flatnonzero(np.asarray(losses) <= threshold)
    return int(hits[0]) if hits.size else None


def training_curves(problem: NQMProblem, P0, alphas, config: NQMMetaTrainConfig, key) -> dict:
    """Meta-train P from ``P0`` for each alpha; per-iteration meta-loss and spectral radius."""
    curves = {}
    for alpha_key, alpha in zip(jax.random.split(key, len(alphas)), alphas, strict=True):
        result = meta_train(
            alpha,
            jnp.asarray(P0),
            problem.H,
            problem.phi0,
            problem.sigma_xi,
            config,
            key=alpha_key,
            phi0_cov=problem.phi0_cov,
        )
        curves[float(alpha)] = {
            "theorem1_at_start": theorem1_holds(alpha, P0, problem.H),
            "meta_loss": np.asarray(result.meta_loss, dtype=np.float64),
            "spectral_radius": np.asarray(result.spectral_radius, dtype=np.float64),
        }
    return curves
