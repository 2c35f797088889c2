"""Causal pre-LayerNorm Transformer language model (Vaswani et al. 2017; pre-LN as in
Xiong et al. 2020), in pure JAX.

Each block: ``x <- x + W_o MHA(LN(x))`` then ``x <- x + W_2 gelu(W_1 LN(x))``, where the
multi-head attention of head h is ``softmax(Q_h K_h^T / sqrt(d_head) + M) V_h`` with the causal
mask ``M_ij = -inf for j > i``. Tokens get a learned embedding plus a learned position embedding;
a final LayerNorm precedes the vocabulary projection (``lm1b_transformer``: 5 blocks, width 256,
8 heads, sequence 128).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from star_core.tasks.models import layers

# Width of the feed-forward hidden layer as a multiple of the model width.
MLP_RATIO = 4


def init_block(key: jax.Array, width: int) -> dict:
    k_qkv, k_out, k_in, k_mlp_out = jax.random.split(key, 4)
    return {
        "norm_attention": layers.init_norm(width),
        "qkv": layers.init_dense(k_qkv, width, 3 * width),
        "out": layers.init_dense(k_out, width, width),
        "norm_mlp": layers.init_norm(width),
        "mlp_in": layers.init_dense(k_in, width, MLP_RATIO * width),
        "mlp_out": layers.init_dense(k_mlp_out, MLP_RATIO * width, width),
    }


def causal_attention(params: dict, x: jax.Array, num_heads: int) -> jax.Array:
    """Multi-head causal self-attention of x (B, T, D)."""
    batch, length, width = x.shape
    q, k, v = jnp.split(layers.dense(params["qkv"], x), 3, axis=-1)
    heads = lambda t: t.reshape(batch, length, num_heads, width // num_heads)
    scores = jnp.einsum("bqhd,bkhd->bhqk", heads(q), heads(k)) / jnp.sqrt(width // num_heads)
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, heads(v)).reshape(batch, length, width)
    return layers.dense(params["out"], mixed)


def block(params: dict, x: jax.Array, num_heads: int) -> jax.Array:
    x = x + causal_attention(params, layers.layer_norm(params["norm_attention"], x), num_heads)
    h = jax.nn.gelu(layers.dense(params["mlp_in"], layers.layer_norm(params["norm_mlp"], x)))
    return x + layers.dense(params["mlp_out"], h)


def init_transformer_lm(
    key: jax.Array, vocab: int, width: int, num_blocks: int, max_length: int
) -> dict:
    keys = jax.random.split(key, num_blocks + 3)
    params = {
        "embed": layers.init_embedding(keys[0], vocab, width),
        "position": layers.init_embedding(keys[1], max_length, width),
        "final_norm": layers.init_norm(width),
        "head": layers.init_dense(keys[2], width, vocab),
    }
    for i in range(num_blocks):
        params[f"block_{i}"] = init_block(keys[3 + i], width)
    return params


def transformer_lm(params: dict, tokens: jax.Array, num_heads: int) -> jax.Array:
    """Next-token logits (B, T, vocab) for tokens (B, T)."""
    length = tokens.shape[1]
    x = layers.embed(params["embed"], tokens) + params["position"]["table"][:length]
    num_blocks = sum(name.startswith("block_") for name in params)
    for i in range(num_blocks):
        x = block(params[f"block_{i}"], x, num_heads)
    return layers.dense(params["head"], layers.layer_norm(params["final_norm"], x))
