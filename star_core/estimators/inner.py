"""Adapter: a (task, learned optimizer) pair as an ``InnerProblem`` for the estimators.

The inner state is the model parameters and the learned optimizer's state. One inner step at
meta-parameters ``theta`` (docs/algorithm.md, "Meta-loss"):

    loss_t, grads_t = value_and_grad(task.loss)(params_t, key_t, batch_t)
    updates, opt_state = lopt.transform(theta).update(grads_t, opt_state, params_t)
    params_{t+1} = params_t + updates

and the reported loss is ``task.normalizer(loss_t)``: the training loss of the batch at step ``t``
*before* the update, clipped to ``[0, max_loss]`` with NaN/inf mapped to ``max_loss``, so that a
diverging inner run cannot dominate the meta-loss.

A reset (``init``) draws new parameters from the given key and a fresh optimizer state (whose
step count is 0). ``init`` is given the unperturbed theta so that optimizers whose state layout
needs theta can build it; the state values must not depend on theta.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from star_core.estimators.unroll import InnerProblem, PyTree


class InnerState(NamedTuple):
    """State of one inner training run: model parameters and learned-optimizer state."""

    params: PyTree
    opt_state: PyTree


def make_inner_problem(task: Any, lopt: Any) -> InnerProblem:
    """Build the ``InnerProblem`` that trains ``task`` with ``lopt.transform(theta)``."""

    def init(theta: PyTree, key: jax.Array) -> InnerState:
        params = task.init(key)
        return InnerState(params=params, opt_state=lopt.transform(theta).init(params))

    def step(
        theta: PyTree, state: InnerState, batch: PyTree, key: jax.Array
    ) -> tuple[InnerState, jax.Array]:
        loss, grads = jax.value_and_grad(task.loss)(state.params, key, batch)
        updates, opt_state = lopt.transform(theta).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return InnerState(params=params, opt_state=opt_state), task.normalizer(loss)

    return InnerProblem(init=init, step=step)
