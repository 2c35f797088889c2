"""Generators of valid and malformed JobSpecs, shared by the conversion and servicer tests.

``malformed_specs(200)`` returns ``(description, spec, field)`` triples: each spec has exactly one
bad field (on top of a random valid background), and ``field`` is the path the error must name
*in a SubmitJobRequest* (``spec.estimator.sigma``; ``spec`` for a spec over the size limit).
``valid_specs(n)`` returns random valid specs. Both are deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from services.generated.star.v1 import job_pb2

NAN, INF = float("nan"), float("inf")
Mutator = Callable[[job_pb2.JobSpec], None]


def _set(path: str, value) -> Mutator:
    """A mutator that sets the dotted proto field ``path`` to ``value``."""

    def mutate(spec: job_pb2.JobSpec) -> None:
        *parents, name = path.split(".")
        message = spec
        for parent in parents:
            message = getattr(message, parent)
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(message, name).clear()
            getattr(message, name).update(value)
        elif field.is_repeated:
            del getattr(message, name)[:]
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)

    return mutate


def _both(*mutators: Mutator) -> Mutator:
    def mutate(spec: job_pb2.JobSpec) -> None:
        for mutator in mutators:
            mutator(spec)

    return mutate


def _clear_eval_steps(spec: job_pb2.JobSpec) -> None:
    spec.evaluation.task = "digits_mlp"
    spec.evaluation.ClearField("steps")


# (description, mutator, field in a SubmitJobRequest)
MALFORMED: list[tuple[str, Mutator, str]] = [
    ("unknown task", _set("tasks", ["nope"]), "spec.tasks[0]"),
    ("second task unknown", _set("tasks", ["digits_mlp", "bogus"]), "spec.tasks[1]"),
    ("repeated task", _set("tasks", ["digits_mlp", "digits_mlp"]), "spec.tasks[1]"),
    ("empty task name", _set("tasks", [""]), "spec.tasks[0]"),
    ("17 tasks", _set("tasks", [f"t{i}" for i in range(17)]), "spec.tasks"),
    ("spec over 64 KiB", _set("tasks", ["x" * 100] * 700), "spec"),
    ("baseline as optimizer", _set("optimizer.kind", "adam"), "spec.optimizer.kind"),
    ("kind in capitals", _set("optimizer.kind", "STAR"), "spec.optimizer.kind"),
    (
        "negative beta3",
        _set("optimizer.constants", {"beta3": -1.0}),
        "spec.optimizer.constants.beta3",
    ),
    ("nan alpha0", _set("optimizer.constants", {"alpha0": NAN}), "spec.optimizer.constants.alpha0"),
    ("inf beta4", _set("optimizer.constants", {"beta4": INF}), "spec.optimizer.constants.beta4"),
    (
        "beta1 is not a star constant",
        _set("optimizer.constants", {"beta1": 1e-3}),
        "spec.optimizer.constants.beta1",
    ),
    (
        "beta3 is not a blackbox constant",
        _both(_set("optimizer.kind", "blackbox"), _set("optimizer.constants", {"beta3": 1e-3})),
        "spec.optimizer.constants.beta3",
    ),
    (
        "negative blackbox beta1",
        _both(_set("optimizer.kind", "blackbox"), _set("optimizer.constants", {"beta1": -0.5})),
        "spec.optimizer.constants.beta1",
    ),
    (
        "hyperparam has no blackbox term",
        _both(_set("optimizer.kind", "hyperparam"), _set("optimizer.precondition_blackbox", False)),
        "spec.optimizer.precondition_blackbox",
    ),
    (
        "blackbox has no nominal direction",
        _both(_set("optimizer.kind", "blackbox"), _set("optimizer.nominal_direction", "adam")),
        "spec.optimizer.nominal_direction",
    ),
    (
        "unknown nominal direction",
        _set("optimizer.nominal_direction", "newton"),
        "spec.optimizer.nominal_direction",
    ),
    (
        "17 constants",
        _set("optimizer.constants", {f"c{i}": 1.0 for i in range(17)}),
        "spec.optimizer.constants",
    ),
    ("unknown estimator", _set("estimator.kind", "reinforce"), "spec.estimator.kind"),
    ("zero sigma", _set("estimator.sigma", 0.0), "spec.estimator.sigma"),
    ("negative sigma", _set("estimator.sigma", -1.0), "spec.estimator.sigma"),
    ("nan sigma", _set("estimator.sigma", NAN), "spec.estimator.sigma"),
    ("inf sigma", _set("estimator.sigma", INF), "spec.estimator.sigma"),
    ("zero truncation", _set("estimator.truncation_length", 0), "spec.estimator.truncation_length"),
    (
        "negative truncation",
        _set("estimator.truncation_length", -5),
        "spec.estimator.truncation_length",
    ),
    ("zero horizon", _set("estimator.horizon", 0), "spec.estimator.horizon"),
    ("zero pairs", _set("estimator.num_pairs", 0), "spec.estimator.num_pairs"),
    ("too many pairs", _set("estimator.num_pairs", 1025), "spec.estimator.num_pairs"),
    (
        "truncation over horizon",
        _both(_set("estimator.truncation_length", 100), _set("estimator.horizon", 50)),
        "spec.estimator.truncation_length",
    ),
    ("horizon too long", _set("estimator.horizon", 2_000_000), "spec.estimator.horizon"),
    (
        "truncation too long",
        _both(_set("estimator.truncation_length", 200_000), _set("estimator.horizon", 1_000_000)),
        "spec.estimator.truncation_length",
    ),
    ("zero outer lr", _set("outer.learning_rate", 0.0), "spec.outer.learning_rate"),
    ("negative outer lr", _set("outer.learning_rate", -1.0), "spec.outer.learning_rate"),
    ("nan outer lr", _set("outer.learning_rate", NAN), "spec.outer.learning_rate"),
    ("zero clip", _set("outer.clip", 0.0), "spec.outer.clip"),
    ("inf clip", _set("outer.clip", INF), "spec.outer.clip"),
    ("negative weight decay", _set("outer.weight_decay", -1.0), "spec.outer.weight_decay"),
    ("nan weight decay", _set("outer.weight_decay", NAN), "spec.outer.weight_decay"),
    ("zero outer steps", _set("outer_steps", 0), "spec.outer_steps"),
    ("negative outer steps", _set("outer_steps", -1), "spec.outer_steps"),
    ("too many outer steps", _set("outer_steps", 1_000_001), "spec.outer_steps"),
    ("negative seed", _set("seed", -1), "spec.seed"),
    ("zero checkpoint interval", _set("checkpoint_interval", 0), "spec.checkpoint_interval"),
    ("zero workers", _set("num_workers", 0), "spec.num_workers"),
    ("65 workers", _set("num_workers", 65), "spec.num_workers"),
    ("negative workers", _set("num_workers", -3), "spec.num_workers"),
    ("negative gpus", _set("gpus_per_worker", -1.0), "spec.gpus_per_worker"),
    ("fractional gpus above one", _set("gpus_per_worker", 1.5), "spec.gpus_per_worker"),
    ("nan gpus", _set("gpus_per_worker", NAN), "spec.gpus_per_worker"),
    ("nine gpus", _set("gpus_per_worker", 9.0), "spec.gpus_per_worker"),
    (
        "GPU as a custom resource",
        _set("worker_resources", {"GPU": 1.0}),
        "spec.worker_resources.GPU",
    ),
    (
        "zero custom resource",
        _set("worker_resources", {"accel": 0.0}),
        "spec.worker_resources.accel",
    ),
    (
        "nan custom resource",
        _set("worker_resources", {"accel": NAN}),
        "spec.worker_resources.accel",
    ),
    (
        "resource name with a space",
        _set("worker_resources", {"bad name": 1.0}),
        "spec.worker_resources",
    ),
    (
        "17 custom resources",
        _set("worker_resources", {f"r{i}": 1.0 for i in range(17)}),
        "spec.worker_resources",
    ),
    ("negative staleness", _set("max_staleness", -1), "spec.max_staleness"),
    ("staleness over 100", _set("max_staleness", 101), "spec.max_staleness"),
    ("zero estimates per step", _set("estimates_per_step", 0), "spec.estimates_per_step"),
    ("too many estimates per step", _set("estimates_per_step", 1025), "spec.estimates_per_step"),
    ("zero cpus per worker", _set("cpus_per_worker", 0), "spec.cpus_per_worker"),
    ("65 cpus per worker", _set("cpus_per_worker", 65), "spec.cpus_per_worker"),
    ("zero checkpoints kept", _set("keep_checkpoints", 0), "spec.keep_checkpoints"),
    ("1001 checkpoints kept", _set("keep_checkpoints", 1001), "spec.keep_checkpoints"),
    (
        "warm start id is a path",
        _set("warm_start_checkpoint_id", "../../etc/passwd"),
        "spec.warm_start_checkpoint_id",
    ),
    (
        "warm start id too long",
        _set("warm_start_checkpoint_id", "c" * 200),
        "spec.warm_start_checkpoint_id",
    ),
    ("unknown evaluation task", _set("evaluation.task", "nope"), "spec.evaluation.task"),
    ("zero evaluation steps", _set("evaluation.steps", 0), "spec.evaluation.steps"),
    ("zero evaluation seeds", _set("evaluation.seeds", 0), "spec.evaluation.seeds"),
    ("65 evaluation seeds", _set("evaluation.seeds", 65), "spec.evaluation.seeds"),
    ("unknown baseline", _set("evaluation.baselines", ["rmsprop"]), "spec.evaluation.baselines[0]"),
    (
        "repeated baseline",
        _set("evaluation.baselines", ["adam", "adam"]),
        "spec.evaluation.baselines[1]",
    ),
    ("nine baselines", _set("evaluation.baselines", ["adam"] * 9), "spec.evaluation.baselines"),
    (
        "default evaluation steps over the bound",
        _both(_set("estimator.horizon", 1_000_000), _clear_eval_steps),
        "spec.evaluation.steps",
    ),
]


def _background(rng: random.Random) -> job_pb2.JobSpec:
    """A random valid spec (a few fields set, the rest left to the defaults)."""
    spec = job_pb2.JobSpec()
    choices: list[Mutator] = [
        _set("seed", rng.randrange(0, 10_000)),
        _set("outer_steps", rng.randrange(1, 500)),
        _set("num_workers", rng.randrange(1, 9)),
        _set("max_staleness", rng.randrange(0, 4)),
        _set("checkpoint_interval", rng.randrange(1, 100)),
        _set("outer.learning_rate", 10 ** rng.uniform(-4, -2)),
        _set("outer.decay_all", rng.random() < 0.5),
        _set("estimator.sigma", 10 ** rng.uniform(-3, -1)),
        _set("estimator.num_pairs", rng.randrange(1, 17)),
        _set("tasks", rng.choice([["digits_mlp"], ["digits_mlp", "digits_cnn"], ["nqm"]])),
        _set("gpus_per_worker", rng.choice([0.0, 0.25, 1.0, 2.0])),
        _set("worker_resources", {"accel": rng.choice([0.5, 1.0])}),
        _set("evaluation.seeds", rng.randrange(1, 4)),
        _set("evaluation.steps", rng.randrange(10, 200)),
        _set("evaluation.baselines", ["adam", "adam-tuned"][: rng.randrange(0, 3)]),
    ]
    for mutator in rng.sample(choices, rng.randrange(1, 7)):
        mutator(spec)
    return spec


def valid_specs(count: int, seed: int = 0) -> list[job_pb2.JobSpec]:
    """``count`` random valid JobSpecs."""
    rng = random.Random(seed)
    return [_background(rng) for _ in range(count)]


def malformed_specs(count: int = 200, seed: int = 0) -> list[tuple[str, job_pb2.JobSpec, str]]:
    """``count`` specs with one bad field each: ``(description, spec, field)``, cycling
    through :data:`MALFORMED` over random valid backgrounds."""
    rng = random.Random(seed)
    out, seen = [], set()
    for index in range(count):
        description, mutate, field = MALFORMED[index % len(MALFORMED)]
        while True:  # a background that makes this spec unlike the others
            spec = _background(rng)
            mutate(spec)
            key = spec.SerializeToString(deterministic=True)
            if key not in seen:
                break
        seen.add(key)
        out.append((description, spec, field))
    return out
