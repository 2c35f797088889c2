"""LSTM language model (Hochreiter & Schmidhuber 1997), in pure JAX.

Per step, with ``[i, f, g, o] = x_t W_x + h_{t-1} W_h + b``:

    c_t = sigmoid(f + 1) * c_{t-1} + sigmoid(i) * tanh(g),    h_t = sigmoid(o) * tanh(c_t)

(the +1 forget-gate bias keeps memory open at initialization; Jozefowicz et al. 2015).
The language model embeds tokens, runs the LSTM with ``jax.lax.scan`` over time and projects
each hidden state to vocabulary logits (``lm1b_lstm``: embed 128 -> LSTM 256 -> vocab).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from star_core.tasks.models import layers

# Constant added to the forget-gate pre-activation.
FORGET_BIAS = 1.0


def init_lstm_lm(key: jax.Array, vocab: int, embed_dim: int, hidden: int) -> dict:
    k_embed, k_x, k_h, k_head = jax.random.split(key, 4)
    return {
        "embed": layers.init_embedding(k_embed, vocab, embed_dim),
        "lstm": {
            "w_x": layers.lecun_normal(k_x, (embed_dim, 4 * hidden), embed_dim),
            "w_h": layers.lecun_normal(k_h, (hidden, 4 * hidden), hidden),
            "b": jnp.zeros((4 * hidden,)),
        },
        "head": layers.init_dense(k_head, hidden, vocab),
    }


def lstm(params: dict, inputs: jax.Array) -> jax.Array:
    """Hidden states (B, T, H) of the LSTM over inputs (B, T, E), from zero state."""
    hidden = params["w_h"].shape[0]
    projected = inputs @ params["w_x"] + params["b"]  # All input projections at once.

    def step(carry, x_proj):
        h, c = carry
        i, f, g, o = jnp.split(x_proj + h @ params["w_h"], 4, axis=-1)
        c = jax.nn.sigmoid(f + FORGET_BIAS) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((inputs.shape[0], hidden), inputs.dtype)
    _, states = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(projected, 0, 1))
    return jnp.swapaxes(states, 0, 1)


def lstm_lm(params: dict, tokens: jax.Array) -> jax.Array:
    """Next-token logits (B, T, vocab) for tokens (B, T)."""
    states = lstm(params["lstm"], layers.embed(params["embed"], tokens))
    return layers.dense(params["head"], states)
