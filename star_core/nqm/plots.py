"""Matplotlib renderings of the NQM figures (paper Figures 1 and 2), written as PNG (Agg backend).

Each function takes the plain data produced by :mod:`star_core.nqm.figure1` /
:mod:`star_core.nqm.figure2` and a path; matplotlib is imported inside the functions so importing
``star_core.nqm`` stays light.
"""

from __future__ import annotations

import numpy as np

# Resolution of the written PNGs.
DPI = 130
# Colors of the horizons (green for T = 1 to blue for T = 1000, as in the paper) and of the alphas.
HORIZON_COLORS = ("#2ca02c", "#17becf", "#1f77b4", "#1f1f8f")
ALPHA_COLORS = ("#d62728", "#ff7f0e", "#bcbd22", "#2ca02c", "#1f77b4")
# Lowest relative gap drawn in Figure 2c (below it the exact runs only show float round-off).
GAP_PLOT_FLOOR = 1e-4


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_figure1(data: dict, path) -> None:
    """Four complex-plane panels: before (red circles), after (blue x), trail, unit circle."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 400))
    for ax, (panel, values) in zip(axes, data["panels"].items(), strict=True):
        ax.plot(circle.real, circle.imag, color="0.3", lw=1)
        trail = np.array([p for spectrum in values["path"] for p in spectrum])
        ax.scatter(trail[:, 0], trail[:, 1], s=3, color="0.7", label="as strength grows")
        before, after = np.array(values["before"]), np.array(values["after"])
        ax.scatter(
            before[:, 0],
            before[:, 1],
            s=40,
            facecolors="none",
            edgecolors="red",
            label=f"before, rho={values['spectral_radius_before']:.2f}",
        )
        ax.scatter(
            after[:, 0],
            after[:, 1],
            s=40,
            marker="x",
            color="blue",
            label=f"after, rho={values['spectral_radius_after']:.2f}",
        )
        ax.set_title(f"({panel}) {values['title']}")
        ax.set_aspect("equal")
        ax.set_xlim(-1.3, 1.9)
        ax.set_ylim(-1.3, 1.3)
        ax.axhline(0, color="0.85", lw=0.5, zorder=0)
        ax.axvline(0, color="0.85", lw=0.5, zorder=0)
        ax.set_xlabel("Re lambda(A)")
        ax.legend(loc="lower left", fontsize=7)
    axes[0].set_ylabel("Im lambda(A)")
    fig.suptitle(
        "Figure 1: eigenvalues of A = I - K(alpha I + P)H before (o) and after (x) "
        "each intervention"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# Figure 2a's right panel shows log10 variances up to this value (the left panel shows all).
ZOOM_LOG10_MAX = 12.0


def plot_figure2a(data: dict, path) -> None:
    """log10 tr Var of the meta-gradient versus alpha, one curve per horizon; full and zoomed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    alphas = np.array(data["alphas"])
    low, high = data["theorem1_alpha_interval"]
    for ax, zoom in zip(axes, (False, True), strict=True):
        ax.axvspan(low, high, color="0.92", label="Theorem 1 holds at this P")
        for color, (horizon, values) in zip(
            HORIZON_COLORS, data["log10_trace_variance"].items(), strict=False
        ):
            finite = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            ax.plot(alphas, finite, marker="o", ms=3, color=color, label=f"T = {horizon}")
        ax.set_xlabel("alpha (nominal step size)")
        if zoom:
            ax.set_ylim(top=ZOOM_LOG10_MAX)
            ax.set_title(f"zoom: log10 variance <= {ZOOM_LOG10_MAX:g}")
        else:
            ax.set_title("Figure 2a: meta-gradient variance vs nominal step")
    axes[0].set_ylabel("log10 tr Var[grad_P meta-loss]")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _plot_training(data: dict, key: str, ylabel: str, title: str, path, log_y: bool) -> None:
    plt = _pyplot()
    estimators = data["estimators"]
    fig, axes = plt.subplots(1, len(estimators), figsize=(6.2 * len(estimators), 4.6), sharey=True)
    for ax, (estimator, runs) in zip(np.atleast_1d(axes), estimators.items(), strict=True):
        for color, run in zip(ALPHA_COLORS, runs, strict=False):
            values = np.array(run[key])
            if key == "meta_loss":
                values = values / data["optimal_meta_loss"] - 1.0
            steps = np.array(run["iterations"])
            ax.plot(
                steps,
                values,
                color=color,
                lw=1.2,
                label=f"2 alpha/lambda_max = {run['alpha_fraction']:.1f}",
            )
        if key == "meta_loss":
            ax.axhline(
                data["near_optimal_gap"],
                color="k",
                ls="--",
                lw=1,
                label=f"{data['near_optimal_gap']:.0%} above optimum",
            )
        else:
            ax.axhline(1.0, color="k", ls="--", lw=1, label="|lambda| = 1")
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
            ax.set_ylim(bottom=GAP_PLOT_FLOOR)
        ax.set_xlabel("meta-iteration")
        ax.set_title(f"{title}\n({estimator.replace('_', ' ')} meta-gradient)")
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_figure2b(data: dict, path) -> None:
    """max |lambda(A)| during meta-training, one curve per alpha, one panel per estimator."""
    _plot_training(
        data, "spectral_radius", "max |lambda(A)|", "Figure 2b: spectral radius", path, log_y=False
    )


def plot_figure2c(data: dict, path) -> None:
    """Exact meta-loss (T = 50) during meta-training, relative to the optimum, log scale."""
    _plot_training(
        data,
        "meta_loss",
        "meta-loss / optimal meta-loss - 1  (T = 50)",
        "Figure 2c: meta-loss above the optimum",
        path,
        log_y=True,
    )
