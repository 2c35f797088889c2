"""``star train``, ``star eval`` and ``star compare``: meta-train and evaluate learned optimizers.

- ``star train [CONFIG] --out DIR [overrides]``: meta-train (``star_core.training.meta_train``).
  The config comes from CONFIG (a JSON file), else from ``DIR/config.json`` (resuming), else the
  defaults; flags override single fields. A folder holding a checkpoint is resumed.
- ``star eval (--checkpoint PATH | --baseline NAME) --task NAME --steps N --seeds K --out DIR``:
  the evaluation protocol (docs/algorithm.md); writes ``eval.json`` and ``curves.png``. Each seed
  has two divergence flags: ``diverged`` (training loss) and ``heldout_diverged`` (held-out loss).
- ``star compare --checkpoint PATH ... --baseline NAME ... --task NAME --out DIR``: several
  optimizers on one task; writes ``compare.json`` and ``compare.png``.

Baselines are the registered optimizers without meta-parameters (``adam``, ``sgdm``, ``aggmo``;
their fields via ``--opt-arg KEY=VALUE``) and ``adam-tuned`` (Adam at the best rate of the 7-point
grid 1e-4..1e-1, picked on seeds disjoint from the reported ones: ``tune_adam``).
Every input is checked before any work starts, and outputs are written only at the end, each
file atomically, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# The baseline name that runs the tuned-Adam learning-rate sweep.
TUNED_ADAM = "adam-tuned"
# Config flag (argparse dest) -> the field it sets, a path in MetaTrainConfig and in the JobSpec
# alike (``star submit`` sends the same flags in a JobSpec: services/cli/jobspec.py).
CONFIG_FLAG_FIELDS = {
    "outer_steps": "outer_steps",
    "seed": "seed",
    "checkpoint_interval": "checkpoint_interval",
    "outer_lr": "outer.learning_rate",
    "weight_decay": "outer.weight_decay",
    "decay_all": "outer.decay_all",
    "estimator": "estimator.kind",
    "horizon": "estimator.horizon",
    "truncation": "estimator.truncation_length",
    "pairs": "estimator.num_pairs",
    "sigma": "estimator.sigma",
}
DEFAULT_EVAL_STEPS = 1000
DEFAULT_EVAL_SEEDS = 3


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it is JSON (``0.1``, ``true``), else a str."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _output_folder(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {path} exists and is not a directory")
    return path


def register(subparsers) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_compare(subparsers)


def _register_train(subparsers) -> None:
    parser = subparsers.add_parser("train", help="meta-train a learned optimizer (resumable)")
    parser.add_argument("config", nargs="?", type=Path, help="JSON MetaTrainConfig file")
    parser.add_argument("--out", type=Path, required=True, help="run folder (created/resumed)")
    parser.add_argument(
        "--warm-start",
        type=Path,
        metavar="CHECKPOINT",
        help="start from this checkpoint's theta (file or run folder; fresh "
        "outer state); ignored when --out already holds a checkpoint",
    )
    add_config_flags(parser)
    parser.set_defaults(handler=run_train)


def add_config_flags(parser: argparse.ArgumentParser, task_args: bool = True) -> None:
    """The flags that override single fields of a meta-training config (``star train``, and
    ``star submit``/``star schedule add``, which send them in a JobSpec: those pass
    ``task_args=False``, a JobSpec has no task arguments). See :func:`config_from_args`."""
    parser.add_argument("--task", action="append", help="meta-training task (repeatable)")
    if task_args:
        parser.add_argument(
            "--task-arg",
            action="append",
            type=_key_value,
            default=[],
            metavar="KEY=VALUE",
            help="task field, applied to every --task",
        )
    parser.add_argument("--optimizer", help="learned optimizer: blackbox, star, hyperparam")
    parser.add_argument(
        "--opt-arg",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="optimizer constant or ablation switch",
    )
    parser.add_argument("--estimator", choices=("pes", "es"), help="gradient estimator")
    parser.add_argument("--outer-steps", type=int, help="outer (meta) steps")
    parser.add_argument("--horizon", type=int, help="inner episode length T")
    parser.add_argument("--truncation", type=int, help="inner steps per truncation K")
    parser.add_argument("--pairs", type=int, help="antithetic perturbation pairs")
    parser.add_argument("--sigma", type=float, help="perturbation standard deviation")
    parser.add_argument("--outer-lr", type=float, help="outer Adam learning rate")
    parser.add_argument(
        "--weight-decay",
        type=float,
        help="outer weight decay lambda: lambda * theta is added to the MLP's"
        " meta-gradient (optax.add_decayed_weights)",
    )
    parser.add_argument(
        "--decay-all",
        action="store_true",
        default=None,
        help="decay every meta-parameter, not only the MLP",
    )
    parser.add_argument("--seed", type=int, help="seed of the run")
    parser.add_argument("--checkpoint-interval", type=int, help="outer steps per checkpoint")


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task to train")
    parser.add_argument(
        "--task-arg",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="task field",
    )
    parser.add_argument(
        "--opt-arg",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="baseline optimizer field (e.g. learning_rate)",
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_EVAL_STEPS, help="inner steps N")
    parser.add_argument("--seeds", type=int, default=DEFAULT_EVAL_SEEDS, help="seeds 0..K-1")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def _register_eval(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate one optimizer on a task")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="checkpoint file or meta-training run folder")
    which.add_argument("--baseline", help=f"adam, sgdm, aggmo or {TUNED_ADAM}")
    _add_eval_arguments(parser)
    parser.set_defaults(handler=run_eval)


def _register_compare(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="compare several optimizers on one task")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="[LABEL=]PATH of a checkpoint or run folder (repeatable)",
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help=f"adam, sgdm, aggmo or {TUNED_ADAM} (repeatable)",
    )
    _add_eval_arguments(parser)
    parser.set_defaults(handler=run_compare)


# ----- star train -----------------------------------------------------------------------------


def _train_config(args: argparse.Namespace):
    from star_core.training import MetaTrainConfig
    from star_core.training.loop import CONFIG_FILE

    if args.config is not None:
        data = MetaTrainConfig.from_file(args.config).to_dict()
    elif (args.out / CONFIG_FILE).exists():
        data = MetaTrainConfig.from_file(args.out / CONFIG_FILE).to_dict()
    else:
        data = MetaTrainConfig().to_dict()
    return config_from_args(args, data)


def config_from_args(args: argparse.Namespace, data: dict[str, Any]):
    """The MetaTrainConfig of ``data`` (a ``MetaTrainConfig.to_dict()``) with the flags of
    :func:`add_config_flags` applied: a new optimizer drops the old one's constants and
    switches, new tasks drop the old task arguments, ``--opt-arg`` sets a switch
    (``SWITCHES``) or a constant."""
    from star_core.training import MetaTrainConfig
    from star_core.training.config import SWITCHES

    if args.task:
        data["tasks"] = args.task
        data["task_args"] = {}
    if getattr(args, "task_arg", None):
        data["task_args"] = {name: dict(args.task_arg) for name in data["tasks"]}
    optimizer = data["optimizer"]
    if args.optimizer and args.optimizer != optimizer["kind"]:
        optimizer = {"kind": args.optimizer, "constants": {}}
    for key, value in args.opt_arg:
        if key in SWITCHES:
            optimizer[key] = value
        else:
            optimizer["constants"] = {**optimizer["constants"], key: value}
    data["optimizer"] = optimizer
    for dest, path in CONFIG_FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            *parents, name = path.split(".")
            node = data
            for parent in parents:
                node = node.setdefault(parent, {})
            node[name] = value
    return MetaTrainConfig.from_dict(data)


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from star_core.training import meta_train
    from star_core.training.loop import METRICS_FILE, checkpoint_path

    out = _output_folder(args.out)
    config = _train_config(args)
    if args.warm_start is not None:  # checked before anything starts or is written
        from star_core.training.checkpoint import resolve_checkpoint_path
        from star_core.training.learner import Learner

        Learner(config).warm_start_theta(resolve_checkpoint_path(args.warm_start))
    with tqdm(total=config.outer_steps, desc="meta-train", unit="step") as bar:

        def progress(step: int, record: dict[str, Any]) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(
                task=record["task"],
                meta_loss=f"{record['meta_loss']:.4f}",
                dropped=record["dropped_estimates"],
            )

        result = meta_train(config, out, progress, warm_start=args.warm_start)
    print(f"meta-trained {result.step} outer steps ({result.dropped_estimates} estimates dropped)")
    print(f"  checkpoint: {checkpoint_path(out, result.step)}")
    print(f"  metrics:    {out / METRICS_FILE}")
    return 0


# ----- star eval / star compare ---------------------------------------------------------------


def _candidate(spec: str, kind: str, opt_args: dict[str, Any]):
    """(label, runner) where runner(task, steps, seeds, progress) -> EvalResult; validated now."""
    from star_core import optimizers
    from star_core.training import load_learned_optimizer, tune_adam
    from star_core.training.evaluate import evaluate

    if kind == "checkpoint":
        label, sep, path = spec.partition("=")
        if not sep or "/" in label:
            label, path = "", spec
        lopt, theta, metadata = load_learned_optimizer(path)
        label = label or f"{metadata['optimizer']}@{metadata['step']} ({Path(path).name})"
        return label, lambda task, n, seeds, cb: evaluate(
            task, lopt, theta, n, seeds, label, progress=cb
        )
    if spec == TUNED_ADAM:
        return TUNED_ADAM, lambda task, n, seeds, cb: tune_adam(task, n, seeds, progress=cb)
    baselines = list(optimizers.baselines())
    if spec not in baselines:
        raise ValueError(
            f"--baseline must be one of {', '.join(baselines + [TUNED_ADAM])}, got {spec!r}"
        )
    lopt = optimizers.get(spec, **opt_args)
    return spec, lambda task, n, seeds, cb: evaluate(task, lopt, {}, n, seeds, spec, progress=cb)


def _check_budget(args: argparse.Namespace) -> list[int]:
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    return list(range(args.seeds))


def _run_all(args, candidates) -> list:
    from tqdm import tqdm

    from star_core import tasks

    task = tasks.get(args.task, **dict(args.task_arg))
    seeds = _check_budget(args)
    results = []
    for label, runner in candidates:
        with tqdm(total=args.steps, desc=label, unit="step") as bar:
            results.append(runner(task, args.steps, seeds, lambda t, b=bar: b.update(t - b.n)))
    return results


def _write_outputs(out: Path, name: str, payload: dict, figure) -> list[Path]:
    import io

    from star_core.training.checkpoint import write_bytes_atomically, write_text_atomically

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    paths = [out / f"{name}.json", out / f"{'curves' if name == 'eval' else name}.png"]
    write_text_atomically(paths[0], json.dumps(payload, indent=2))
    write_bytes_atomically(paths[1], buffer.getvalue())
    return paths


def _plot(results, title: str, per_seed: bool):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for result in results:
        steps = np.arange(result.curves.shape[1])
        if per_seed:
            for seed, curve in zip(result.seeds, result.curves, strict=True):
                axis.plot(steps, curve, lw=0.8, label=f"train, seed {seed}")
            if result.heldout is not None:
                axis.plot(
                    result.heldout_steps,
                    np.mean(result.heldout, axis=0),
                    "ko--",
                    label="held-out (mean over seeds)",
                )
        else:
            (line,) = axis.plot(steps, np.mean(result.curves, axis=0), lw=1.2, label=result.label)
            axis.fill_between(
                steps,
                np.min(result.curves, axis=0),
                np.max(result.curves, axis=0),
                color=line.get_color(),
                alpha=0.2,
            )
    curves = np.concatenate([r.curves.ravel() for r in results])
    if np.all(np.isfinite(curves)) and np.all(curves > 0):
        axis.set_yscale("log")
    axis.set(xlabel="inner step", ylabel="training loss", title=title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _heldout_text(row: dict[str, Any]) -> str:
    """The held-out part of a seed's line ("" when the task has no held-out split)."""
    if row["heldout_diverged"] is None:
        return ""
    return (
        f"; held-out initial {row['initial_heldout']:.4g}, final {row['final_heldout']:.4g},"
        f" diverged {row['heldout_diverged']}"
    )


def run_eval(args: argparse.Namespace) -> int:
    out = _output_folder(args.out)
    kind, spec = ("checkpoint", args.checkpoint) if args.checkpoint else ("baseline", args.baseline)
    (result,) = _run_all(args, [_candidate(spec, kind, dict(args.opt_arg))])
    title = f"{result.label} on {result.task}, {result.steps} steps"
    paths = _write_outputs(out, "eval", result.to_dict(), _plot([result], title, per_seed=True))
    for row in result.per_seed():
        print(
            f"seed {row['seed']}: initial {row['initial_loss']:.4g}, final"
            f" {row['final_loss']:.4g}, mean {row['mean_loss']:.4g}, diverged {row['diverged']}"
            f"{_heldout_text(row)}"
        )
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    out = _output_folder(args.out)
    opt_args = dict(args.opt_arg)
    candidates = [_candidate(c, "checkpoint", opt_args) for c in args.checkpoint]
    candidates += [_candidate(b, "baseline", opt_args) for b in args.baseline]
    if len(candidates) < 1:
        raise ValueError("give at least one --checkpoint or --baseline")
    results = _run_all(args, candidates)
    title = f"{args.task}, {args.steps} steps, {args.seeds} seeds (mean, min-max band)"
    payload = {"task": args.task, "steps": args.steps, "results": [r.to_dict() for r in results]}
    paths = _write_outputs(out, "compare", payload, _plot(results, title, per_seed=False))
    for result in results:
        aggregate = result.to_dict()["aggregate"]
        seeds = len(result.seeds)
        held = aggregate["heldout_diverged"]
        held = "" if held is None else f", held-out diverged {held}/{seeds}"
        print(
            f"{result.label}: mean loss {aggregate['mean_loss']}, final loss"
            f" {aggregate['final_loss']}, diverged {aggregate['diverged']}/{seeds}{held}"
        )
    print("wrote " + ", ".join(map(str, paths)))
    return 0
