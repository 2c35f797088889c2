"""Image classifiers of the tasks (docs/tasks.md), as pure (init, apply) functions.

- ``mlp``: flatten -> [dense -> (LayerNorm) -> ReLU] per hidden width -> dense to the classes
  (``fmnist_mlp``, ``digits_mlp``; ``cifar10_mlp_ln`` with LayerNorm);
- ``cnn``: [3x3 conv (stride s) -> ReLU] per (channels, stride) -> global average pool -> dense
  (``cifar10_cnn``, ``digits_cnn``);
- ``resnet``: a small pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual
  Networks"): stem 3x3 conv, one pre-activation block per stage
  ``y = x' + conv(relu(bn(conv(relu(bn(x)), stride))))`` with ``x'`` a strided 1x1 projection
  when the shape changes, then BN -> ReLU -> global average pool -> dense
  (``imagenet32_resnet``).

Inputs are images (B, H, W, C) scaled to [0, 1]; outputs are logits (B, num_classes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from star_core.tasks.models import layers


def init_mlp(
    key: jax.Array,
    input_shape: tuple[int, ...],
    hidden: tuple[int, ...],
    num_classes: int,
    use_layer_norm: bool = False,
) -> dict:
    widths = (math.prod(input_shape), *hidden)
    keys = jax.random.split(key, len(hidden) + 1)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        params[f"hidden_{i}"] = {"dense": layers.init_dense(keys[i], fan_in, fan_out)}
        if use_layer_norm:
            params[f"hidden_{i}"]["norm"] = layers.init_norm(fan_out)
    params["head"] = layers.init_dense(keys[-1], widths[-1], num_classes)
    return params


def mlp(params: dict, images: jax.Array) -> jax.Array:
    x = images.reshape(images.shape[0], -1)
    for i in range(len(params) - 1):
        block = params[f"hidden_{i}"]
        x = layers.dense(block["dense"], x)
        if "norm" in block:
            x = layers.layer_norm(block["norm"], x)
        x = jax.nn.relu(x)
    return layers.dense(params["head"], x)


def init_cnn(
    key: jax.Array,
    input_shape: tuple[int, ...],
    channels: tuple[int, ...],
    num_classes: int,
) -> dict:
    keys = jax.random.split(key, len(channels) + 1)
    widths = (input_shape[-1], *channels)
    params = {
        f"conv_{i}": layers.init_conv(keys[i], c_in, c_out)
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    }
    params["head"] = layers.init_dense(keys[-1], widths[-1], num_classes)
    return params


def cnn(params: dict, images: jax.Array, strides: tuple[int, ...]) -> jax.Array:
    x = images
    for i, stride in enumerate(strides):
        x = jax.nn.relu(layers.conv(params[f"conv_{i}"], x, stride))
    return layers.dense(params["head"], jnp.mean(x, axis=(1, 2)))


def init_resnet(
    key: jax.Array,
    input_shape: tuple[int, ...],
    stage_widths: tuple[int, ...],
    num_classes: int,
) -> dict:
    keys = jax.random.split(key, 3 * len(stage_widths) + 2)
    params = {"stem": layers.init_conv(keys[0], input_shape[-1], stage_widths[0])}
    width = stage_widths[0]
    for i, out in enumerate(stage_widths):
        k_a, k_b, k_proj = keys[1 + 3 * i : 4 + 3 * i]
        block = {
            "norm_a": layers.init_norm(width),
            "conv_a": layers.init_conv(k_a, width, out),
            "norm_b": layers.init_norm(out),
            "conv_b": layers.init_conv(k_b, out, out),
        }
        if i > 0 or out != width:
            block["project"] = layers.init_conv(k_proj, width, out, size=1)
        params[f"stage_{i}"] = block
        width = out
    params["final_norm"] = layers.init_norm(width)
    params["head"] = layers.init_dense(keys[-1], width, num_classes)
    return params


def resnet(params: dict, images: jax.Array, strides: tuple[int, ...]) -> jax.Array:
    x = layers.conv(params["stem"], images)
    for i, stride in enumerate(strides):
        block = params[f"stage_{i}"]
        h = jax.nn.relu(layers.batch_norm(block["norm_a"], x))
        shortcut = layers.conv(block["project"], h, stride) if "project" in block else x
        h = layers.conv(block["conv_a"], h, stride)
        h = jax.nn.relu(layers.batch_norm(block["norm_b"], h))
        x = shortcut + layers.conv(block["conv_b"], h)
    x = jax.nn.relu(layers.batch_norm(params["final_norm"], x))
    return layers.dense(params["head"], jnp.mean(x, axis=(1, 2)))
