"""The evaluation protocol of docs/algorithm.md: train a task with an optimizer from several seeds.

For each seed ``s`` the inner model starts from ``task.init(init_key_s)`` and is trained for N
steps on ``task.batches(s)``. The training curve has N + 1 points::

    curve[t] = loss(params_t, batch_t)      t = 0..N

where ``params_t`` are the parameters after t updates (``curve[t]`` is measured before update
t + 1, as in the meta-loss of docs/algorithm.md). Per seed:

- ``initial_loss = curve[0]``, ``final_loss = curve[N]``;
- ``mean_loss = mean(curve[0:N])``: the meta-objective ``1/N sum_t L_t(phi_t)``;
- ``diverged``: a non-finite loss anywhere, or ``final_loss > initial_loss``.

Where the task has a held-out split, the mean loss over ``HELDOUT_BATCHES`` held-out batches is
also measured at ``heldout_points`` evenly spaced steps (including 0 and N), giving per seed:

- ``initial_heldout``, ``final_heldout``: the held-out loss at step 0 and at step N;
- ``heldout_diverged``: a non-finite held-out loss, or ``final_heldout > initial_heldout``. An
  optimizer that memorizes the training set while its parameters grow without bound keeps a
  small training loss (``diverged`` stays False) while its held-out loss explodes.

These three are None for a task without a held-out split. A task reading a catalog dataset
(``tasks.data.store.DATASETS``) has the splits of its catalog entry (imagenet32 has no test
split); held-out evaluation is then skipped with a logged warning.

All seeds (and, for the tuned-Adam baseline, all learning rates) train together: ``jax.vmap``
over runs, ``jax.lax.scan`` over steps in chunks of at most ``MAX_CHUNK`` steps (so that the
batches of one chunk fit in memory). Every run's numbers depend only on its own seed and
hyperparameters, not on which other runs share the batch, up to floating-point rounding: XLA's
batched kernels round differently for different batch sizes, and over thousands of steps that
can move the second digit of a small final loss.

Tuned Adam (the main baseline): Adam at every learning rate of ``ADAM_LR_GRID`` (7 points,
log-spaced over [1e-4, 1e-1]) is trained on *tuning* seeds, disjoint from the reported ones
(reported seed ``s`` pairs with tuning seed ``TUNING_SEED_OFFSET + s``); the rate with the lowest
mean (over tuning seeds) ``mean_loss`` is kept, and Adam at that rate is then trained and
reported on the requested seeds. Picking the rate on the reported seeds would let it fit their
noise and flatter the baseline.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from star_core.tasks.data import store

logger = logging.getLogger(__name__)

# Upper bound on the steps scanned per jitted call (bounds the batches held in memory).
MAX_CHUNK = 250
# The split the held-out loss is measured on.
HELDOUT_SPLIT = "test"
# Held-out batches averaged per held-out measurement.
HELDOUT_BATCHES = 2
# Seed of the held-out batch stream (the same batches for every run and every point).
HELDOUT_SEED = 0
# Held-out measurements per run (evenly spaced, including step 0 and step N).
DEFAULT_HELDOUT_POINTS = 5
# The tuned-Adam learning-rate grid: 7 points, log-spaced from 1e-4 to 1e-1.
ADAM_LR_GRID = tuple(float(x) for x in np.logspace(-4, -1, 7))
# Tuned Adam picks its rate on seed TUNING_SEED_OFFSET + s for each reported seed s.
TUNING_SEED_OFFSET = 1000

MakeTx = Callable[[Any], optax.GradientTransformation]
Progress = Callable[[int], None]


class EvalResult(NamedTuple):
    """Curves and per-seed numbers of one optimizer on one task."""

    label: str
    task: str
    steps: int
    seeds: tuple[int, ...]
    curves: np.ndarray  # [num_seeds, steps + 1] training losses
    heldout_steps: tuple[int, ...]  # () when the task has no held-out split
    heldout: np.ndarray | None  # [num_seeds, len(heldout_steps)]
    extra: dict[str, Any]  # e.g. the tuned-Adam sweep

    def per_seed(self) -> list[dict[str, Any]]:
        """One dict per seed: seed, initial/final/mean loss, diverged, and the held-out trio
        initial_heldout, final_heldout, heldout_diverged (None without a held-out split)."""
        heldout = [None] * len(self.seeds) if self.heldout is None else list(self.heldout)
        return [
            {"seed": s, **summarize_curve(c), **summarize_heldout(h)}
            for s, c, h in zip(self.seeds, self.curves, heldout, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become None)."""
        rows = self.per_seed()
        means = {
            k: _mean_or_none([r[k] for r in rows])
            for k in ("initial_loss", "final_loss", "mean_loss")
        }
        data = {
            "label": self.label,
            "task": self.task,
            "steps": self.steps,
            "seeds": list(self.seeds),
            "per_seed": rows,
            "aggregate": {
                **means,
                "diverged": sum(r["diverged"] for r in rows),
                "heldout_diverged": _count_or_none([r["heldout_diverged"] for r in rows]),
            },
            "curves": self.curves.tolist(),
            "heldout_steps": list(self.heldout_steps),
            "heldout": None if self.heldout is None else self.heldout.tolist(),
            **self.extra,
        }
        return _json_safe(data)


def summarize_curve(curve: np.ndarray) -> dict[str, Any]:
    """initial_loss, final_loss, mean_loss (over the N training steps) and diverged."""
    curve = np.asarray(curve, np.float64)
    initial, final = float(curve[0]), float(curve[-1])
    diverged = bool(not np.all(np.isfinite(curve)) or final > initial)
    return {
        "initial_loss": initial,
        "final_loss": final,
        "mean_loss": float(np.mean(curve[:-1])),
        "diverged": diverged,
    }


def summarize_heldout(heldout: np.ndarray | None) -> dict[str, Any]:
    """initial_heldout, final_heldout and heldout_diverged of one seed's held-out losses.

    ``heldout_diverged``: a non-finite held-out loss, or the final one above the initial one.
    All three are None when ``heldout`` is None (the task has no held-out split).
    """
    if heldout is None:
        return {"initial_heldout": None, "final_heldout": None, "heldout_diverged": None}
    heldout = np.asarray(heldout, np.float64)
    initial, final = float(heldout[0]), float(heldout[-1])
    diverged = bool(not np.all(np.isfinite(heldout)) or final > initial)
    return {"initial_heldout": initial, "final_heldout": final, "heldout_diverged": diverged}


def _count_or_none(flags: list[bool | None]) -> int | None:
    return None if any(f is None for f in flags) else sum(1 for f in flags if f)


def _mean_or_none(values: list[float]) -> float | None:
    finite = np.isfinite(values)
    return float(np.mean(values)) if finite.all() else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _stack(batches: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def _make_kernels(task: Any, make_tx: MakeTx) -> tuple[Callable, Callable, Callable, Callable]:
    """Jitted (init, train-chunk, loss) functions vmapped over runs."""

    def init_one(hparams: Any, key: jax.Array) -> tuple[Any, Any]:
        params = task.init(key)
        return params, make_tx(hparams).init(params)

    def chunk_one(
        hparams: Any, carry: tuple[Any, Any], batches: Any, keys: jax.Array
    ) -> tuple[tuple[Any, Any], jax.Array]:
        tx = make_tx(hparams)

        def step(
            carry: tuple[Any, Any], inputs: tuple[Any, jax.Array]
        ) -> tuple[tuple[Any, Any], jax.Array]:
            params, opt_state = carry
            batch, key = inputs
            loss, grads = jax.value_and_grad(task.loss)(params, key, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(step, carry, (batches, keys))

    def heldout_one(params: Any, batches: Any, key: jax.Array) -> jax.Array:
        losses = jax.vmap(task.loss, in_axes=(None, None, 0))(params, key, batches)
        return jnp.mean(losses)

    init = jax.jit(jax.vmap(init_one))
    # batches/keys arrive as [C, R, ...]: move the run axis to the front.
    chunk = jax.jit(jax.vmap(chunk_one, in_axes=(0, 0, 1, 1), out_axes=(0, 1)))
    loss = jax.jit(jax.vmap(task.loss))
    heldout = jax.jit(jax.vmap(heldout_one, in_axes=(0, None, 0)))
    return init, chunk, loss, heldout


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Independent keys of one evaluation seed: (init, training losses, held-out losses)."""
    init_key, loss_key, heldout_key = jax.random.split(jax.random.key(int(seed)), 3)
    return init_key, loss_key, heldout_key


def missing_heldout_reason(task: Any) -> str | None:
    """Why ``task`` has no ``HELDOUT_SPLIT`` split, or None when it has one.

    A task whose ``dataset`` is a catalog entry has that entry's splits; every other task (the
    quadratic, text corpora) serves the test split.
    """
    dataset = getattr(task, "dataset", None)
    if dataset not in store.DATASETS:
        return None
    splits = store.dataset_spec(dataset).splits
    if HELDOUT_SPLIT in splits:
        return None
    return f"dataset {dataset!r} has splits {list(splits)}, no {HELDOUT_SPLIT!r} split"


def _heldout_batches(task: Any) -> Any | None:
    """HELDOUT_BATCHES test batches stacked, or None (with a warning) when the task has none."""
    reason = missing_heldout_reason(task)
    if reason is not None:
        logger.warning("held-out evaluation of task %r skipped: %s", task.name, reason)
        return None
    stream = task.batches(HELDOUT_SEED, split=HELDOUT_SPLIT)
    return _stack(list(itertools.islice(stream, HELDOUT_BATCHES)))


def _checkpoints(steps: int, points: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, steps, max(points, 2))})


def train_runs(
    task: Any,
    make_tx: MakeTx,
    hparams: Any,
    seeds: Sequence[int],
    steps: int,
    heldout_points: int = DEFAULT_HELDOUT_POINTS,
    progress: Progress | None = None,
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray | None]:
    """Train R runs at once: run r uses ``hparams[r]`` (leading axis R) and seed ``seeds[r]``.
    ``progress(steps_done)`` is called after every chunk.

    Returns ``(curves [R, steps + 1], heldout_steps, heldout [R, H] or None)``.
    """
    init, chunk, loss_fn, heldout_fn = _make_kernels(task, make_tx)
    seed_keys = [run_keys(s) for s in seeds]
    init_keys = jnp.stack([k[0] for k in seed_keys])
    loss_keys, heldout_keys = [k[1] for k in seed_keys], [k[2] for k in seed_keys]
    streams = [task.batches(int(s), split="train") for s in seeds]
    heldout_data = _heldout_batches(task) if heldout_points > 0 else None
    marks = _checkpoints(steps, heldout_points) if heldout_data is not None else [0, steps]

    carry = init(hparams, init_keys)
    losses, heldout, t = [], [], 0
    while True:
        if heldout_data is not None and t in marks:
            keys = _step_keys(heldout_keys, t, t + 1)[0]
            heldout.append(np.asarray(heldout_fn(carry[0], heldout_data, keys)))
        if t == steps:
            break
        end = min([m for m in marks if m > t] + [t + MAX_CHUNK])
        batches = _stack([_stack([next(s) for s in streams]) for _ in range(end - t)])
        carry, chunk_losses = chunk(hparams, carry, batches, _step_keys(loss_keys, t, end))
        losses.append(np.asarray(chunk_losses))
        t = end
        if progress is not None:
            progress(t)
    final_batch = _stack([next(s) for s in streams])
    final = np.asarray(loss_fn(carry[0], _step_keys(loss_keys, steps, steps + 1)[0], final_batch))
    curves = np.concatenate(losses + [final[None]], axis=0).T
    if heldout_data is None:
        return curves, (), None
    return curves, tuple(marks), np.stack(heldout, axis=1)


def _step_keys(loss_keys: list[jax.Array], begin: int, end: int) -> jax.Array:
    """Loss keys of steps [begin, end) for every run: shape [end - begin, R]."""
    per_run = jnp.stack(loss_keys)
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    return jax.vmap(lambda t: fold(per_run, t))(jnp.arange(begin, end))


def _broadcast(tree: Any, runs: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (runs,) + jnp.shape(x)), tree)


def evaluate(
    task: Any,
    lopt: Any,
    theta: Any,
    steps: int,
    seeds: Sequence[int],
    label: str | None = None,
    heldout_points: int = DEFAULT_HELDOUT_POINTS,
    progress: Progress | None = None,
) -> EvalResult:
    """Train ``task`` with ``lopt.transform(theta)`` for ``steps`` steps from each seed."""
    _check_budget(steps, seeds)
    hparams = _broadcast(theta, len(seeds))
    curves, marks, heldout = train_runs(
        task, lopt.transform, hparams, seeds, steps, heldout_points, progress
    )
    return EvalResult(
        label or lopt.name,
        task.name,
        steps,
        tuple(int(s) for s in seeds),
        curves,
        marks,
        heldout,
        {},
    )


def _adam(learning_rate: jax.Array) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def tune_adam(
    task: Any,
    steps: int,
    seeds: Sequence[int],
    learning_rates: Sequence[float] = ADAM_LR_GRID,
    tuning_seeds: Sequence[int] | None = None,
    heldout_points: int = DEFAULT_HELDOUT_POINTS,
    progress: Progress | None = None,
) -> EvalResult:
    """Adam at the best rate of ``learning_rates``, picked on ``tuning_seeds``, run on ``seeds``.

    Every rate trains on every tuning seed (together, training losses only); the rate with the
    lowest mean ``mean_loss`` over the tuning seeds is kept and Adam at that rate trains on
    ``seeds``, which alone are reported. ``tuning_seeds`` defaults to ``TUNING_SEED_OFFSET + s``
    for each ``s`` in ``seeds`` and must not share a seed with ``seeds``. The result's ``extra``:
    ``{"learning_rate": best, "tuning_seeds": [...], "sweep": [{"learning_rate", "mean_loss"}]}``
    (``mean_loss`` of the sweep is over the tuning seeds). ``progress`` counts both phases as
    one run of ``steps`` steps.

    Example::

        result = tune_adam(tasks.get("digits_mlp"), 300, seeds=[0, 1, 2])
        result.extra["learning_rate"]   # picked on seeds 1000, 1001, 1002
    """
    _check_budget(steps, seeds)
    tuning = _tuning_seeds(seeds, tuning_seeds)
    if not learning_rates or any(not (lr > 0) for lr in learning_rates):
        raise ValueError(f"learning_rates must be positive numbers, got {list(learning_rates)}")
    runs_lr = jnp.asarray([lr for lr in learning_rates for _ in tuning], jnp.float32)
    runs_seed = [s for _ in learning_rates for s in tuning]
    share = len(runs_seed) / (len(runs_seed) + len(seeds))  # of the work spent tuning
    curves, _, _ = train_runs(
        task,
        _adam,
        runs_lr,
        runs_seed,
        steps,
        heldout_points=0,
        progress=_scaled(progress, 0.0, share, steps),
    )
    n = len(tuning)
    scores = []
    for i, lr in enumerate(learning_rates):
        means = [summarize_curve(c)["mean_loss"] for c in curves[i * n : (i + 1) * n]]
        score = float(np.mean(means)) if np.all(np.isfinite(means)) else float("inf")
        scores.append({"learning_rate": float(lr), "mean_loss": score})
    best = float(learning_rates[int(np.argmin([s["mean_loss"] for s in scores]))])
    best_lr = jnp.full((len(seeds),), best, jnp.float32)
    curves, marks, heldout = train_runs(
        task,
        _adam,
        best_lr,
        seeds,
        steps,
        heldout_points,
        _scaled(progress, share, 1.0 - share, steps),
    )
    extra = {"learning_rate": best, "tuning_seeds": list(tuning), "sweep": scores}
    return EvalResult(
        "adam (tuned)",
        task.name,
        steps,
        tuple(int(s) for s in seeds),
        curves,
        marks,
        heldout,
        extra,
    )


def _tuning_seeds(seeds: Sequence[int], tuning_seeds: Sequence[int] | None) -> tuple[int, ...]:
    if tuning_seeds is None:
        tuning_seeds = [TUNING_SEED_OFFSET + int(s) for s in seeds]
    tuning = tuple(int(s) for s in tuning_seeds)
    if not tuning or len(set(tuning)) != len(tuning) or any(s < 0 for s in tuning):
        raise ValueError(f"tuning_seeds must be distinct non-negative integers, got {tuning}")
    shared = sorted(set(tuning) & {int(s) for s in seeds})
    if shared:
        raise ValueError(f"tuning_seeds must be disjoint from seeds; both hold {shared}")
    return tuning


def _scaled(progress: Progress | None, offset: float, share: float, steps: int) -> Progress | None:
    """``progress`` for one phase that does ``share`` of the work after ``offset`` of it."""
    if progress is None:
        return None

    def report(done: int) -> None:
        progress(int(round(steps * (offset + share * done / steps))))

    return report


def _check_budget(steps: int, seeds: Sequence[int]) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not seeds or len(set(seeds)) != len(seeds) or any(int(s) < 0 for s in seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
