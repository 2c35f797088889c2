"""The learner: the outer half of meta-training (theta, the outer optimizer, checkpoints).

Meta-training is split in two so that one process and a cluster run the same code:

- the **learner** (this module) holds theta, the outer optimizer state, the outer step and the
  count of dropped estimates; it turns a list of meta-gradient estimates into one outer step
  and writes and reads checkpoints;
- **workers** (``star_core.training.worker``) hold the ES/PES estimators and their persistent
  states and compute estimates for a given theta.

``meta_train`` is one learner and one worker in one process; the service runs one learner actor
and many worker actors (``services/cluster``). One outer step, given estimates ``g_1..g_n``::

    finite = [g_i that have no NaN/inf element]       (the others are dropped, each counted)
    g      = mean(finite)                             (no step if none is finite)
    theta, outer_state = outer step of outer.py (Adam on clip(g + weight decay))

The step counter advances whether or not an update was applied. A learner starts from a fresh
theta, from another run's theta (warm start: theta only, fresh outer state), or resumes from a
checkpoint (theta, outer state, step and drop count). Checkpoints are the safetensors files of
``checkpoint.py``; :meth:`Learner.checkpoint_bytes` and :meth:`Learner.restore` also take bytes,
so a learner on another machine can send them to whoever stores them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from star_core.errors import ConfigError
from star_core.training import checkpoint as ckpt
from star_core.training.config import MetaTrainConfig
from star_core.training.keys import run_keys
from star_core.training.outer import guarded_step, outer_optimizer

# The field a bad warm-start checkpoint is reported under.
WARM_START_FIELD = "warm_start"
# Bytes of all of one step's estimates up to which they are averaged stacked (see
# average_finite; STAR's theta is 812 bytes: 20000 estimates fit).
STACK_BYTES = 16 << 20


class LearnerState(NamedTuple):
    """What the learner carries from one outer step to the next (and checkpoints)."""

    step: int  # outer steps completed
    theta: Any
    outer_state: Any
    dropped: int  # non-finite estimates dropped so far


class StepInfo(NamedTuple):
    """What one call of :meth:`Learner.apply` did."""

    applied: bool  # theta moved
    used: int  # finite estimates averaged
    dropped: int  # non-finite estimates dropped in this step
    grad_norm: float  # L2 norm of the averaged estimate (NaN when none was finite)


class Learner:
    """The outer optimization of a :class:`MetaTrainConfig`; see the module docstring."""

    def __init__(self, config: MetaTrainConfig):
        self.config = config
        self.lopt = config.make_optimizer()
        self.keys = run_keys(config.seed)
        outer = config.outer
        self.outer_tx = outer_optimizer(
            outer.learning_rate, outer.clip, outer.weight_decay, outer.decay_all
        )
        self._outer_step = jax.jit(self._outer_step_impl)

    def _outer_step_impl(self, grad, outer_state, theta):
        return guarded_step(self.outer_tx, grad, outer_state, theta)

    def init(self, warm_start: str | os.PathLike | bytes | None = None) -> LearnerState:
        """Step 0: theta from the run's key, or from the checkpoint ``warm_start`` (theta only;
        validated by :meth:`warm_start_theta`); a fresh outer optimizer state either way."""
        if warm_start is None:
            theta = self.lopt.init_meta_params(self.keys.theta)
        else:
            theta = self.warm_start_theta(warm_start)
        return LearnerState(0, theta, self.outer_tx.init(theta), 0)

    def warm_start_theta(self, source: str | os.PathLike | bytes) -> Any:
        """theta of another run's checkpoint, checked before any work starts.

        The checkpoint must be a readable STAR checkpoint of the same optimizer, with exactly
        this optimizer's meta-parameter names and shapes, and every element finite; otherwise
        ConfigError(field="warm_start") says what is wrong.
        """
        try:
            loaded = ckpt.load_checkpoint(source)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(WARM_START_FIELD, f"warm start: {err}") from err
        stored = loaded.metadata["optimizer"]
        if stored != self.config.optimizer.kind:
            raise ConfigError(
                WARM_START_FIELD,
                f"warm start: the checkpoint holds a {stored!r} optimizer, this run trains"
                f" {self.config.optimizer.kind!r}",
            )
        template = self.lopt.init_meta_params(self.keys.theta)
        named = ckpt.named_leaves(loaded.theta)
        unexpected = sorted(set(named) - set(ckpt.named_leaves(template)))
        try:
            if unexpected:
                raise ValueError(f"tensors {unexpected} are not meta-parameters of {stored!r}")
            theta = ckpt.fill_tree(template, named, source="warm start")
        except ValueError as err:
            raise ConfigError(WARM_START_FIELD, f"warm start: {err}") from err
        if not all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(theta)):
            raise ConfigError(WARM_START_FIELD, "warm start: the checkpoint's theta is not finite")
        return jax.tree.map(jnp.asarray, theta)

    def apply(self, state: LearnerState, estimates: Sequence[Any]) -> tuple[LearnerState, StepInfo]:
        """One outer step from ``estimates`` (pytrees shaped like theta); see the module doc."""
        grad, used = average_finite(estimates)
        dropped = len(estimates) - used
        if grad is None:
            info = StepInfo(False, 0, dropped, float("nan"))
            return state._replace(step=state.step + 1, dropped=state.dropped + dropped), info
        theta, outer_state, applied = self._outer_step(grad, state.outer_state, state.theta)
        grad_norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grad))))
        applied = bool(applied)
        dropped += 0 if applied else used
        new_state = LearnerState(state.step + 1, theta, outer_state, state.dropped + dropped)
        return new_state, StepInfo(applied, used if applied else 0, dropped, grad_norm)

    def metadata(self, state: LearnerState) -> dict[str, Any]:
        """The checkpoint metadata of ``state``: what made it and how far it got."""
        return {
            "optimizer": self.config.optimizer.kind,
            "optimizer_config": json.loads(json.dumps(dataclasses.asdict(self.lopt.config))),
            "step": state.step,
            "meta_train_config": self.config.to_dict(),
            "dropped_estimates": state.dropped,
        }

    def checkpoint_bytes(self, state: LearnerState, **extra: Any) -> bytes:
        """The checkpoint file of ``state`` as bytes (``extra`` goes into the metadata)."""
        return ckpt.checkpoint_bytes(
            state.theta, state.outer_state, {**self.metadata(state), **extra}
        )

    def save(self, state: LearnerState, path: str | os.PathLike, **extra: Any) -> None:
        """Write the checkpoint of ``state`` to ``path`` atomically."""
        ckpt.write_bytes_atomically(path, self.checkpoint_bytes(state, **extra))

    def restore(self, source: str | os.PathLike | bytes) -> LearnerState:
        """The state saved in a checkpoint (file or bytes), every tensor checked against this
        learner's own structure (ValueError naming a missing or mismatched tensor)."""
        name = "checkpoint data" if isinstance(source, bytes) else str(source)
        loaded = ckpt.load_checkpoint(source)
        template = self.init()
        theta = ckpt.fill_tree(template.theta, ckpt.named_leaves(loaded.theta), source=name)
        outer_state = ckpt.fill_tree(
            template.outer_state,
            loaded.outer_state,
            ckpt.OUTER_STATE_PREFIX,
            source=name,
            naming=ckpt.outer_state_naming(loaded.metadata),
        )
        step = int(loaded.metadata["step"])
        dropped = int(loaded.metadata.get("dropped_estimates", 0))
        return LearnerState(step, _as_jax(theta), _as_jax(outer_state), dropped)


def average_finite(estimates: Sequence[Any]) -> tuple[Any | None, int]:
    """The mean of the estimates that have no NaN/inf element (None when there is none) and
    how many those are, on the host in numpy.

    Estimates of at most STACK_BYTES together are stacked, one array per leaf of theta: the
    finiteness of all of them is then one vectorized check per leaf and the mean one sum,
    whatever their number. Larger ones are checked and added one at a time into one running
    sum (stacking them would copy them all; 64 estimates of 4 MiB took 8x longer stacked).
    (The former rule, a JAX check and a host sync per estimate, cost ~1.5 ms per estimate of
    STAR's 203-element theta: ~100 ms of an outer step at 64 workers; benchmarks/README.md.)
    """
    if not estimates:
        return None, 0
    treedef = jax.tree.structure(estimates[0])
    # flatten_up_to: each estimate's leaves in theta's order, raising when its structure differs
    # (a method of jaxlib's PyTreeDef that JAX's stubs leave out).
    flatten = treedef.flatten_up_to  # type: ignore[attr-defined]
    leaves = [[np.asarray(x) for x in flatten(g)] for g in estimates]
    total: list[np.ndarray] | None
    if sum(x.nbytes for x in leaves[0]) * len(leaves) <= STACK_BYTES:
        total, used = _stacked_sum(leaves)
    else:
        total, used = _running_sum(leaves)
    if total is None or used == 0:
        return None, 0
    return jax.tree.unflatten(treedef, [x / used for x in total]), used


def _stacked_sum(leaves: list[list[np.ndarray]]) -> tuple[list[np.ndarray], int]:
    """(Sum of the finite estimates per leaf, their count); ``leaves[i]``: estimate i's."""
    count = len(leaves)
    stacked = [np.stack(column) for column in zip(*leaves, strict=True)]
    finite = np.ones(count, dtype=bool)
    for leaf in stacked:
        finite &= np.isfinite(leaf.reshape(count, -1)).all(axis=1)
    used = int(finite.sum())
    if used < count:
        stacked = [leaf[finite] for leaf in stacked]
    return [leaf.sum(axis=0) for leaf in stacked], used


def _running_sum(leaves: list[list[np.ndarray]]) -> tuple[list[np.ndarray] | None, int]:
    """What :func:`_stacked_sum` returns, one estimate at a time into one running sum."""
    total, used = None, 0
    for estimate in leaves:
        if not all(np.isfinite(x).all() for x in estimate):
            continue
        if total is None:
            total = [x.copy() for x in estimate]
        else:
            for into, x in zip(total, estimate, strict=True):
                np.add(into, x, out=into)
        used += 1
    return total, used


def _as_jax(tree: Any) -> Any:
    """Every leaf of ``tree`` as a jax array."""
    return jax.tree.map(jnp.asarray, tree)
