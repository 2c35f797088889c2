"""The paper's three claims about STAR, at a scale two CPU cores can run.

Harrison, Metz, Sohl-Dickstein (NeurIPS 2022), Figures 3 and 4, on the embedded data:

1. STAR meta-trains faster and to a lower meta-loss than Blackbox (Figure 3a/3b).
2. Applied for many more steps than its meta-training horizon T, STAR keeps descending while
   Blackbox diverges (Figure 3c/3d): evaluated at 1x, 10x and 50x T against tuned Adam.
3. Meta-trained on ``digits_mlp`` only, STAR generalizes to other architectures and data
   (``digits_cnn``, ``text_lstm``, ``text_transformer``; Figure 4), comparable to tuned Adam.

Stages (each writes JSON + PNG under ``--out``; a finished meta-training run is reused, an
interrupted one resumes, so the script can be re-run after a stop):

    python experiments/paper_claims.py --out results/claims sweep      # beta_3 of STAR
    python experiments/paper_claims.py --out results/claims sweep-outer  # outer lr, sigma
    python experiments/paper_claims.py --out results/claims train [--only LABEL]
    python experiments/paper_claims.py --out results/claims plot       # claim 1
    python experiments/paper_claims.py --out results/claims long       # claim 2
    python experiments/paper_claims.py --out results/claims generalize # claim 3
    python experiments/paper_claims.py --out results/claims adam       # tuned-Adam rows only

``all`` runs them in that order (``adam`` is not part of it: ``long`` and ``generalize`` already
evaluate tuned Adam; ``adam`` re-runs only those rows and updates them in the JSON of claims 2
and 3). Every run is seeded; the numbers in ``docs/results.md`` come from this script with its
defaults.

Evaluation protocol: every optimizer is reported on the same seeds (``EVAL_SEEDS``,
``GENERALIZE_SEEDS``) with two divergence flags per seed, on the training loss and on the
held-out loss (``star_core.training.evaluate``). Tuned Adam picks its learning rate from the
7-point grid ``evaluate.ADAM_LR_GRID`` (1e-4..1e-1) on tuning seeds disjoint from the reported
ones (1000 + s for reported seed s), for claims 2 and 3 alike.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np
from tqdm import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from star_core import optimizers, tasks  # noqa: E402
from star_core.estimators import EstimatorConfig  # noqa: E402
from star_core.training import (  # noqa: E402
    MetaTrainConfig,
    OptimizerConfig,
    OuterConfig,
    load_learned_optimizer,
    meta_train,
)
from star_core.training import evaluate as ev  # noqa: E402

META_TASK = "digits_mlp"
# Meta-training horizon T (inner steps per episode) and truncation length K.
HORIZON = 300
TRUNCATION = 50
PAIRS = 8
SIGMA = 0.01
OUTER_STEPS = 800
# Blackbox gets 3x the outer steps: at 800 its meta-loss had not left ln(10) (it learned not to
# move), so it is resumed from its 800-step checkpoint to give it every chance (docs/results.md).
BLACKBOX_OUTER_STEPS = 2400
OUTER_LR = 3e-3
# STAR's blackbox scale beta_3: chosen by the `sweep` stage (largest grid value whose
# untrained optimizer does not diverge on META_TASK within T steps for any probe).
BETA3_GRID = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
BETA3 = 1e-6  # = the StarConfig default, set from this sweep
# A 10x larger blackbox term: untrained it is unstable for some draws, so the outer weight decay
# has something to control (the regime the paper's weight-decay argument is about).
BETA3_LARGE = 1e-5
# The two outer weight decays of STAR (the paper shows two per figure), in optax's convention
# (gradient + lambda * theta_mlp; training/outer.py). The runs in docs/results.md were made as
# 0.1 and 1.0 under the former penalty lambda * ||theta_mlp||^2: the same trajectories.
WEIGHT_DECAYS = (0.2, 2.0)
# Evaluation: multiples of T for claim 2; seeds of every evaluation.
LONG_MULTIPLES = (1, 10, 50)
EVAL_SEEDS = (0, 1, 2)
# Claim 3: generalization tasks and their step budgets (the text models are slow on a CPU).
GENERALIZE = {"digits_cnn": 1500, "text_lstm": 600, "text_transformer": 400}
GENERALIZE_SEEDS = (0, 1)
TUNED_ADAM = "adam (tuned)"  # the label of the tuned-Adam rows
MOVING_AVERAGE = 25  # outer steps in the meta-loss smoothing window
META_LOSS_LEVELS = (0.5, 0.2, 0.15)  # claim 1: outer steps until the meta-loss is below these
LOSS_FLOOR = 1e-10  # plotted training losses are clipped here (exact zeros break a log axis)
CURVE_POINTS = 300  # evaluation curves are smoothed with a window of steps / CURVE_POINTS


def runs() -> dict[str, MetaTrainConfig]:
    """The four meta-training runs of claim 1, by label."""
    estimator = EstimatorConfig(
        kind="pes", sigma=SIGMA, truncation_length=TRUNCATION, horizon=HORIZON, num_pairs=PAIRS
    )
    common = dict(tasks=(META_TASK,), estimator=estimator, seed=0, checkpoint_interval=100)
    out = {
        "blackbox": MetaTrainConfig(
            optimizer=OptimizerConfig("blackbox"),
            outer=OuterConfig(learning_rate=OUTER_LR, weight_decay=0.0),
            outer_steps=BLACKBOX_OUTER_STEPS,
            **common,
        )
    }
    for beta3 in (BETA3, BETA3_LARGE):
        for wd in WEIGHT_DECAYS:
            out[f"star_b{beta3:g}_wd{wd:g}"] = MetaTrainConfig(
                optimizer=OptimizerConfig("star", {"beta3": beta3}),
                outer=OuterConfig(learning_rate=OUTER_LR, weight_decay=wd),
                outer_steps=OUTER_STEPS,
                **common,
            )
    out["hyperparam"] = MetaTrainConfig(
        optimizer=OptimizerConfig("hyperparam"),
        outer=OuterConfig(learning_rate=OUTER_LR, weight_decay=0.0),
        outer_steps=OUTER_STEPS,
        **common,
    )
    return out


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def stage_sweep(out: Path) -> None:
    """beta_3 of STAR: untrained optimizers (2 theta draws x 2 data seeds) on META_TASK for T."""
    task = tasks.get(META_TASK)
    rows = []
    for beta3 in tqdm(BETA3_GRID, desc="beta3 sweep"):
        lopt = optimizers.get("star", beta3=beta3)
        for draw in (0, 1):
            theta = lopt.init_meta_params(jax.random.key(draw))
            result = ev.evaluate(task, lopt, theta, HORIZON, [0, 1], heldout_points=0)
            for row in result.per_seed():
                rows.append({"beta3": beta3, "theta_draw": draw, **row})
    stable = [
        b
        for b in BETA3_GRID
        if not any(r["diverged"] or r["final_loss"] > 1.0 for r in rows if r["beta3"] == b)
    ]
    chosen = max(stable) if stable else None
    _write_json(
        out / "sweep_beta3.json",
        {"task": META_TASK, "steps": HORIZON, "rows": rows, "stable": stable, "chosen": chosen},
    )
    print(f"beta3 sweep: stable {stable}, chosen {chosen} -> {out / 'sweep_beta3.json'}")


# Outer-loop sweeps on META_TASK (short runs): STAR's outer learning rate, Blackbox's sigma / lr.
SWEEP_STAR_LRS = (1e-3, 3e-3, 1e-2)
SWEEP_STAR_STEPS = 150
SWEEP_BLACKBOX = ((0.05, 3e-3), (0.01, 1e-3), (0.1, 3e-3))  # (sigma, outer learning rate)
SWEEP_BLACKBOX_STEPS = 250
SWEEP_TAIL = 30  # outer steps averaged at the end of a sweep run


def _sweep_configs() -> dict[str, MetaTrainConfig]:
    def config(kind, constants, sigma, lr, wd, steps):
        estimator = EstimatorConfig(
            kind="pes", sigma=sigma, truncation_length=TRUNCATION, horizon=HORIZON, num_pairs=PAIRS
        )
        return MetaTrainConfig(
            tasks=(META_TASK,),
            optimizer=OptimizerConfig(kind, constants),
            estimator=estimator,
            outer=OuterConfig(learning_rate=lr, weight_decay=wd),
            outer_steps=steps,
            seed=0,
            checkpoint_interval=steps,
        )

    out = {
        f"star_lr{lr:g}": config(
            "star", {"beta3": BETA3}, SIGMA, lr, WEIGHT_DECAYS[0], SWEEP_STAR_STEPS
        )
        for lr in SWEEP_STAR_LRS
    }
    for sigma, lr in SWEEP_BLACKBOX:
        out[f"blackbox_s{sigma:g}_lr{lr:g}"] = config(
            "blackbox", {}, sigma, lr, 0.0, SWEEP_BLACKBOX_STEPS
        )
    return out


def stage_sweep_outer(out: Path) -> None:
    """Short meta-training runs that chose the outer learning rate and sigma."""
    summary = {}
    for label, config in _sweep_configs().items():
        folder = out / "sweeps" / label
        meta_train(config, folder)
        loss = np.array([r["meta_loss"] for r in _read_metrics(folder)])
        summary[label] = {
            "outer_steps": len(loss),
            "first_20_mean": float(loss[:20].mean()),
            f"last_{SWEEP_TAIL}_mean": float(loss[-SWEEP_TAIL:].mean()),
        }
    _write_json(out / "sweep_outer.json", summary)
    print(json.dumps(summary, indent=2))


def stage_train(out: Path, only: str | None) -> None:
    for label, config in runs().items():
        if only and label != only:
            continue
        with tqdm(total=config.outer_steps, desc=f"meta-train {label}") as bar:

            def progress(step, record, bar=bar):
                bar.n = step
                bar.set_postfix(meta_loss=f"{record['meta_loss']:.3f}")
                bar.refresh()

            start = time.perf_counter()
            meta_train(config, out / "runs" / label, progress=progress)
        print(f"{label}: {time.perf_counter() - start:.0f} s")


def _read_metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _history(out: Path, label: str) -> list[dict]:
    return _read_metrics(out / "runs" / label)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def _first_below(smooth: np.ndarray, level: float) -> int | None:
    """First outer step at which the moving-average meta-loss is below ``level``."""
    below = np.flatnonzero(smooth < level)
    return int(below[0]) + MOVING_AVERAGE if below.size else None


def stage_plot(out: Path) -> None:
    """Claim 1: meta-training curves (meta-loss per outer step, moving average)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    summary = {}
    for label in runs():
        history = _history(out, label)
        loss = np.array([r["meta_loss"] for r in history])
        seconds = float(sum(r["seconds"] for r in history))
        smooth = _smooth(loss, MOVING_AVERAGE)
        ax.plot(np.arange(len(smooth)) + MOVING_AVERAGE, smooth, label=label)
        summary[label] = {
            "outer_steps": len(loss),
            "first_100_mean": float(loss[:100].mean()),
            "steps_300_to_400_mean": float(loss[300:400].mean()),
            "steps_700_to_800_mean": float(loss[700:800].mean()),
            "last_100_mean": float(loss[-100:].mean()),
            **{f"first_step_below_{x:g}": _first_below(smooth, x) for x in META_LOSS_LEVELS},
            "dropped_estimates": int(history[-1]["dropped_estimates"]),
            "seconds": seconds,
        }
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel(f"meta-loss (normalized, moving average of {MOVING_AVERAGE})")
    ax.set_title(f"Meta-training on {META_TASK}, PES, T={HORIZON}, K={TRUNCATION}, {PAIRS} pairs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "claim1_meta_training.png", dpi=120)
    plt.close(fig)
    _write_json(out / "claim1_meta_training.json", summary)
    print(json.dumps(summary, indent=2))


def _learned(out: Path, label: str):
    return load_learned_optimizer(out / "runs" / label)


def _eval_all(task_name: str, steps: int, seeds, out: Path) -> dict:
    task = tasks.get(task_name)
    results = {}
    for label in tqdm(list(runs()), desc=f"{task_name} x{steps}"):
        lopt, theta, _ = _learned(out, label)
        results[label] = ev.evaluate(task, lopt, theta, steps, seeds, label=label)
    results[TUNED_ADAM] = ev.tune_adam(task, steps, seeds)
    return results


def _plot_curves(results: dict, path: Path, title: str, horizon: int | None) -> None:
    """Training loss (left) and, where the task has a test split, held-out loss (right)."""
    heldout = any(r.heldout is not None for r in results.values())
    fig, axes = plt.subplots(
        1, 2 if heldout else 1, figsize=(13 if heldout else 7, 4.5), squeeze=False
    )
    train_ax = axes[0, 0]
    for label, result in results.items():
        curves = np.where(np.isfinite(result.curves), result.curves, np.nan)
        median = np.nanmedian(curves, axis=0)
        window = max(1, len(median) // CURVE_POINTS)
        smooth = _smooth(median, window) if window > 1 else median
        (line,) = train_ax.plot(
            np.arange(1, len(smooth) + 1) + (window - 1) / 2,
            np.maximum(smooth, LOSS_FLOOR),
            label=label,
        )
        if heldout and result.heldout is not None:
            steps = np.maximum(np.asarray(result.heldout_steps), 1)
            axes[0, 1].plot(
                steps,
                np.nanmedian(result.heldout, axis=0),
                "o-",
                color=line.get_color(),
                label=label,
            )
    train_ax.set_ylabel("training loss (median over seeds, moving average)")
    if heldout:
        axes[0, 1].set_ylabel("held-out loss (median over seeds)")
    for ax in axes[0]:
        if horizon:
            ax.axvline(horizon, color="k", linestyle="--", linewidth=1, label="horizon T")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("inner step")
    train_ax.set_ylim(LOSS_FLOOR, 10.0)
    train_ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(results: dict) -> dict:
    table = {}
    for label, result in results.items():
        data = result.to_dict()
        table[label] = {**data["aggregate"], "per_seed": data["per_seed"]}
        for key in ("learning_rate", "tuning_seeds", "sweep"):
            if key in data:
                table[label][key] = data[key]
        if data.get("heldout"):
            table[label]["final_heldout"] = float(
                np.nanmean([h[-1] for h in data["heldout"] if h[-1] is not None])
            )
    return table


def stage_long(out: Path) -> None:
    """Claim 2: each meta-trained optimizer for 1x, 10x and 50x T, against tuned Adam."""
    summary = {}
    for multiple in LONG_MULTIPLES:
        steps = multiple * HORIZON
        results = _eval_all(META_TASK, steps, EVAL_SEEDS, out)
        summary[f"{multiple}x"] = _table(results)
        _plot_curves(
            results,
            out / f"claim2_{multiple}xT.png",
            f"{META_TASK}: {steps} steps ({multiple}x the horizon T={HORIZON})",
            HORIZON,
        )
        _write_json(out / "claim2_long.json", summary)
    print(
        json.dumps(
            {
                m: {k: (v["final_loss"], v["diverged"]) for k, v in t.items()}
                for m, t in summary.items()
            },
            indent=2,
        )
    )


def stage_generalize(out: Path) -> None:
    """Claim 3: the optimizers meta-trained on META_TASK applied to unseen tasks."""
    summary = {}
    for task_name, steps in GENERALIZE.items():
        results = _eval_all(task_name, steps, GENERALIZE_SEEDS, out)
        summary[task_name] = _table(results)
        _plot_curves(
            results,
            out / f"claim3_{task_name}.png",
            f"{task_name}: meta-trained on {META_TASK} only",
            None,
        )
        _write_json(out / "claim3_generalize.json", summary)
    print(
        json.dumps(
            {
                t: {k: (v["final_loss"], v["diverged"]) for k, v in r.items()}
                for t, r in summary.items()
            },
            indent=2,
        )
    )


def stage_adam(out: Path) -> None:
    """Only the tuned-Adam rows of claims 2 and 3, written into their JSON (created if absent)."""
    jobs = [
        ("claim2_long.json", f"{m}x", META_TASK, m * HORIZON, EVAL_SEEDS) for m in LONG_MULTIPLES
    ]
    jobs += [
        ("claim3_generalize.json", name, name, steps, GENERALIZE_SEEDS)
        for name, steps in GENERALIZE.items()
    ]
    for file, group, task_name, steps, seeds in jobs:
        start = time.perf_counter()
        result = ev.tune_adam(tasks.get(task_name), steps, seeds)
        path = out / file
        summary = json.loads(path.read_text()) if path.exists() else {}
        summary.setdefault(group, {}).update(_table({TUNED_ADAM: result}))
        _write_json(path, summary)
        print(
            f"{group}: lr {result.extra['learning_rate']:g},"
            f" {time.perf_counter() - start:.0f} s -> {path}"
        )


def _markdown(summary: dict, group_name: str) -> str:
    """One markdown table: rows = optimizers, columns = groups (horizons or tasks)."""
    groups = list(summary)
    header = (
        "| optimizer | "
        + " | ".join(
            f"{g}: final train / mean train / final held-out / diverged (train, held-out)"
            for g in groups
        )
        + " |"
    )
    lines = [header, "|---|" + "---|" * len(groups)]
    for label in summary[groups[0]]:
        cells = []
        for g in groups:
            row = summary[g][label]
            held = row.get("final_heldout")
            held = "-" if held is None else f"{held:.3g}"
            held_flag = row.get("heldout_diverged")
            held_flag = "-" if held_flag is None else held_flag
            cells.append(
                f"{row['final_loss']:.3g} / {row['mean_loss']:.3g} / {held} / "
                f"{row['diverged']}, {held_flag}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return f"({group_name}; losses are means over seeds)\n\n" + "\n".join(lines)


def stage_report(out: Path) -> None:
    """Markdown tables of claims 2 and 3 (pasted into docs/results.md)."""
    for name, group in (
        ("claim2_long.json", "multiples of T"),
        ("claim3_generalize.json", "tasks"),
    ):
        path = out / name
        if path.exists():
            print(_markdown(json.loads(path.read_text()), group), end="\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "stage",
        choices=(
            "sweep",
            "sweep-outer",
            "train",
            "plot",
            "long",
            "generalize",
            "adam",
            "report",
            "all",
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("results/claims"))
    parser.add_argument("--only", help="train only the run with this label")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stages = (
        ("sweep", "sweep-outer", "train", "plot", "long", "generalize", "report")
        if (args.stage == "all")
        else (args.stage,)
    )
    for stage in stages:
        if stage == "train":
            stage_train(args.out, args.only)
        else:
            globals()[f"stage_{stage.replace('-', '_')}"](args.out)


if __name__ == "__main__":
    main()
