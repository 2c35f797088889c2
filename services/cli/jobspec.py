"""The JobSpec a client command sends: a spec file (JSON or YAML) with flags on top.

A spec file holds a ``star.v1.JobSpec`` in the proto's JSON form (snake_case field names)::

    tasks: [digits_mlp]
    optimizer: {kind: star, constants: {beta3: 1.0e-5}}
    estimator: {kind: pes, horizon: 200, truncation_length: 20}
    outer_steps: 100
    num_workers: 2

An unknown field is refused naming its path (``estimator.sigmaa``). Fields left out stay unset
and the server fills in the library defaults (``Job.spec`` shows what a job runs).

The flags are ``star train``'s (``services.cli.train.add_config_flags``, without ``--task-arg``:
a JobSpec has no task arguments) and the cluster flags of :func:`add_cluster_flags`; each sets one
JobSpec field (:data:`FLAG_FIELDS`: ``star train``'s table, whose paths are the JobSpec's, and
the cluster flags), ``--task`` replaces the tasks, ``--optimizer`` naming another optimizer drops
the file's constants (as in ``star train``), ``--opt-arg KEY=VALUE`` sets an ablation switch
(a field of ``OptimizerSpec`` of its own) or else a constant. The result sent for the same flags
is the config ``star train`` would run (tests/services/test_cli_client.py checks this through
the server's conversion).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from services.cli.train import CONFIG_FLAG_FIELDS, add_config_flags
from services.client.specs import load_spec_file, spec_from_dict

# OptimizerSpec.kind when it is empty (job.proto).
DEFAULT_OPTIMIZER_KIND = "star"
# OptimizerSpec fields that are not switches: --opt-arg sets any other field of OptimizerSpec
# directly, and any key that is not one of its fields as an entry of `constants`.
OPTIMIZER_NON_SWITCHES = ("kind", "constants")
# Flag (argparse dest) -> the JobSpec field it sets.
FLAG_FIELDS = {
    **CONFIG_FLAG_FIELDS,
    "workers": "num_workers",
    "gpus_per_worker": "gpus_per_worker",
    "max_staleness": "max_staleness",
    "estimates_per_step": "estimates_per_step",
    "cpus_per_worker": "cpus_per_worker",
    "keep_checkpoints": "keep_checkpoints",
    "warm_start": "warm_start_checkpoint_id",
}


def _resource(text: str) -> tuple[str, float]:
    """``NAME=AMOUNT`` of ``--worker-resource``."""
    name, sep, amount = text.partition("=")
    with contextlib.suppress(ValueError):
        if sep and name:
            return name, float(amount)
    raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, got {text!r}")


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """SPEC_FILE, ``star train``'s config flags, :func:`add_cluster_flags` and ``--evaluate``."""
    parser.add_argument(
        "spec_file",
        nargs="?",
        type=Path,
        metavar="SPEC_FILE",
        help="JobSpec as JSON or YAML (proto field names); flags override it",
    )
    add_config_flags(parser, task_args=False)
    add_cluster_flags(parser)
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="run the evaluation protocol on the final checkpoint",
    )


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """The JobSpec fields ``star train`` has no flag for: workers, GPUs, staleness, warm start."""
    group = parser.add_argument_group("cluster")
    group.add_argument("--workers", type=int, help="worker actors (default 2)")
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per worker (default: GPUs if the cluster has them; 0: CPU)",
    )
    group.add_argument(
        "--worker-resource",
        action="append",
        type=_resource,
        default=[],
        metavar="NAME=AMOUNT",
        help="custom Ray resource per worker (repeatable)",
    )
    group.add_argument(
        "--max-staleness",
        type=int,
        help="use estimates up to S outer steps old (default 1; 0: synchronous)",
    )
    group.add_argument(
        "--estimates-per-step",
        type=int,
        help="estimates averaged per outer step (default: --workers)",
    )
    group.add_argument(
        "--cpus-per-worker",
        type=int,
        help="CPUs (cores) each worker asks for and pins itself to (default 1)",
    )
    group.add_argument(
        "--keep-checkpoints",
        type=int,
        help="latest checkpoints the job keeps on disk (default 5)",
    )
    group.add_argument(
        "--warm-start", metavar="CHECKPOINT_ID", help="start from this checkpoint's meta-parameters"
    )


def _set(spec, path: str, value: Any, flag: str) -> None:
    *parents, name = path.split(".")
    message = spec
    for parent in parents:
        message = getattr(message, parent)
    try:
        setattr(message, name, value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--{flag.replace('_', '-')}: {err} ({path})") from None


def _apply_optimizer(spec, args: argparse.Namespace) -> None:
    current = spec.optimizer.kind or DEFAULT_OPTIMIZER_KIND
    if args.optimizer and args.optimizer != current:
        spec.optimizer.Clear()
    if args.optimizer:
        spec.optimizer.kind = args.optimizer
    fields = spec.optimizer.DESCRIPTOR.fields_by_name
    for key, value in args.opt_arg:
        if key in fields and key not in OPTIMIZER_NON_SWITCHES:
            _set(spec, f"optimizer.{key}", value, "opt_arg")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            spec.optimizer.constants[key] = float(value)
        else:
            raise ValueError(f"--opt-arg {key}: a constant must be a number, got {value!r}")


def apply_flags(spec, args: argparse.Namespace):
    """``spec`` (a JobSpec, changed in place and returned) with the flags of
    :func:`add_spec_flags` applied."""
    if args.task:
        del spec.tasks[:]
        spec.tasks.extend(args.task)
    _apply_optimizer(spec, args)
    for dest, path in FLAG_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            _set(spec, path, value, dest)
    for name, amount in args.worker_resource:
        spec.worker_resources[name] = amount
    if args.evaluate:
        spec.evaluation.SetInParent()
    return spec


def spec_from_args(args: argparse.Namespace):
    """The JobSpec of SPEC_FILE (if given) with the flags on top."""
    data = load_spec_file(args.spec_file) if args.spec_file is not None else {}
    spec = spec_from_dict(data, str(args.spec_file or "spec"))
    return apply_flags(spec, args)
