"""Reproduce the paper's NQM Figures 1 and 2 into a folder: PNGs plus the numbers as JSON.

Harrison, Metz, Sohl-Dickstein, NeurIPS 2022, Section 4. ``write_figures`` builds the problem of
:mod:`star_core.nqm.problem` from one seed, computes the data of :mod:`star_core.nqm.figure1` and
:mod:`star_core.nqm.figure2` in float64 (``jax.enable_x64`` as a context manager, no global
config change) and writes ``fig1.png``, ``fig2a.png``, ``fig2b.png``, ``fig2c.png`` with
``fig1.json`` ... ``fig2c.json`` beside them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from star_core.nqm import figure1, figure2, plots
from star_core.nqm.meta_train import NQMMetaTrainConfig
from star_core.nqm.problem import make_problem, problem_summary

logger = logging.getLogger(__name__)

# Points kept per training curve in the JSON (log-spaced iterations; the plots use all points).
JSON_CURVE_POINTS = 200


@dataclasses.dataclass(frozen=True)
class FigureSettings:
    """Sizes of the reproduction; ``FigureSettings.quick()`` is a seconds-long smoke version."""

    seed: int = 0
    dimension: int = 10
    variance_alpha_points: int = 41  # alpha grid over [0, 2 / lambda_max(H)] for Figure 2a
    variance_horizons: tuple[int, ...] = (1, 10, 100, 1000)
    variance_samples: int = 256  # trajectories per (alpha, T) for the variance estimate
    training_horizon: int = 50
    training_iterations: int = 15000
    learning_rate: float = 1e-2
    estimators: tuple[str, ...] = ("closed_form", "sample")

    def __post_init__(self):
        sizes = ("dimension", "variance_alpha_points", "training_iterations", "training_horizon")
        for name in sizes:
            if int(getattr(self, name)) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        if int(self.variance_samples) < 2:
            raise ValueError(f"variance_samples must be >= 2, got {self.variance_samples}")

    @classmethod
    def quick(cls) -> FigureSettings:
        return cls(
            dimension=6,
            variance_alpha_points=9,
            variance_horizons=(1, 10, 100),
            variance_samples=32,
            training_iterations=300,
        )

    def num_steps(self) -> int:
        """Units of work reported to ``progress`` by :func:`write_figures`."""
        return 1 + len(self.variance_horizons) + 1 + len(self.estimators) + 1


def _curve_indices(length: int) -> np.ndarray:
    return np.unique(np.geomspace(1, length, JSON_CURVE_POINTS).astype(int) - 1)


def _figure2a(settings, problem, P0, key, progress) -> dict:
    lambda_max = float(np.linalg.eigvalsh(problem.H)[-1])
    alphas = np.linspace(0.0, 2.0 / lambda_max, settings.variance_alpha_points)
    eig_p0 = np.linalg.eigvalsh(P0)
    curves = {}
    for horizon_key, horizon in zip(
        jax.random.split(key, len(settings.variance_horizons)),
        settings.variance_horizons,
        strict=True,
    ):
        values = figure2.gradient_variance(
            problem, P0, alphas, horizon, settings.variance_samples, horizon_key
        )
        curves[str(horizon)] = [float(v) if np.isfinite(v) else None for v in values]
        progress(f"fig2a T={horizon}")
    return {
        "alphas": alphas.tolist(),
        "theorem1_alpha_interval": [float(-eig_p0[0]), float(2.0 / lambda_max - eig_p0[-1])],
        "P": "P0 of Figure 2b/2c (random symmetric, largest |eigenvalue| 0.2)",
        "P_eigenvalues": eig_p0.tolist(),
        "samples_per_point": settings.variance_samples,
        "log10_trace_variance": curves,
    }


def _figure2bc(settings, problem, P0, key, progress) -> dict:
    lambda_max = float(np.linalg.eigvalsh(problem.H)[-1])
    optimum = figure2.optimal_meta_loss(problem, settings.training_horizon)
    progress("fig2 optimum")
    alphas = [f * lambda_max / 2.0 for f in figure2.TRAINING_ALPHA_FRACTIONS]
    keep = _curve_indices(settings.training_iterations)
    estimators = {}
    for estimator_key, estimator in zip(
        jax.random.split(key, len(settings.estimators)), settings.estimators, strict=True
    ):
        config = NQMMetaTrainConfig(
            horizon=settings.training_horizon,
            num_iterations=settings.training_iterations,
            learning_rate=settings.learning_rate,
            estimator=estimator,
        )
        curves = figure2.training_curves(problem, P0, alphas, config, estimator_key)
        runs = []
        for fraction, (alpha, run) in zip(
            figure2.TRAINING_ALPHA_FRACTIONS, curves.items(), strict=True
        ):
            hit = figure2.first_iteration_below(
                run["meta_loss"], optimum * (1 + figure2.NEAR_OPTIMAL_GAP)
            )
            runs.append(
                {
                    "alpha": alpha,
                    "alpha_fraction": fraction,
                    "theorem1_at_start": run["theorem1_at_start"],
                    "iterations_to_near_optimal": hit,
                    "final_meta_loss": float(run["meta_loss"][-1]),
                    "final_spectral_radius": float(run["spectral_radius"][-1]),
                    "iterations": (keep + 1).tolist(),
                    "meta_loss": run["meta_loss"][keep].tolist(),
                    "spectral_radius": run["spectral_radius"][keep].tolist(),
                }
            )
        estimators[estimator] = runs
        progress(f"fig2b/c {estimator}")
    return {
        "horizon": settings.training_horizon,
        "iterations": settings.training_iterations,
        "outer_optimizer": f"Adam, learning rate {settings.learning_rate}",
        "sample_estimator": "one simulated trajectory per meta-iteration",
        "optimal_meta_loss": optimum,
        "near_optimal_gap": figure2.NEAR_OPTIMAL_GAP,
        "estimators": estimators,
    }


def compute_figure_data(settings: FigureSettings, progress: Callable[[str], None]) -> dict:
    """All figure data, keyed fig1, fig2a, fig2b (= fig2c's runs), computed in float64."""
    key = jax.random.key(settings.seed)
    key_problem, key_fig1, key_p0, key_variance, key_training = jax.random.split(key, 5)
    with jax.enable_x64(True):
        problem = make_problem(key_problem, dimension=settings.dimension)
        summary = problem_summary(problem)
        P_fig1 = figure1.random_learned_matrix(key_fig1, settings.dimension)
        fig1 = {"problem": summary, **figure1.figure1_data(P_fig1, problem.H)}
        progress("fig1")
        P0 = figure2.random_symmetric_start(key_p0, settings.dimension)
        fig2a = {"problem": summary, **_figure2a(settings, problem, P0, key_variance, progress)}
        fig2bc = {"problem": summary, **_figure2bc(settings, problem, P0, key_training, progress)}
    return {"fig1": fig1, "fig2a": fig2a, "fig2bc": fig2bc}


def prepare_output_dir(out_dir) -> Path:
    """Create ``out_dir`` (and parents); a one-line NotADirectoryError when that is impossible."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NotADirectoryError(f"cannot create --out {out_dir}: {err.strerror}") from err
    return out_dir


def write_figures(
    out_dir,
    settings: FigureSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Compute and write the four PNGs and their JSON into ``out_dir``; returns the paths."""
    settings = settings or FigureSettings()
    progress = progress or (lambda stage: logger.info("done: %s", stage))
    out_dir = prepare_output_dir(out_dir)
    data = compute_figure_data(settings, progress)
    outputs = {
        "fig1": (data["fig1"], plots.plot_figure1),
        "fig2a": (data["fig2a"], plots.plot_figure2a),
        "fig2b": (data["fig2bc"], plots.plot_figure2b),
        "fig2c": (data["fig2bc"], plots.plot_figure2c),
    }
    paths = []
    for name, (values, plot) in outputs.items():
        plot(values, out_dir / f"{name}.png")
        (out_dir / f"{name}.json").write_text(json.dumps(values, indent=1) + "\n")
        paths += [out_dir / f"{name}.png", out_dir / f"{name}.json"]
    progress("plots")
    return paths
