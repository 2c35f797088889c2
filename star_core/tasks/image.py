"""Image classification tasks: a model from ``models.vision`` on an image dataset.

Loss: mean softmax cross-entropy of the logits on ``image / 255`` against ``label``
(docs/tasks.md); ``max_loss = 1.5 ln(num_classes)``. Batches are
``{"image": uint8 (B, H, W, C), "label": int32 (B,)}`` (leading axis K with ``copies=K``); the
images stay uint8 on the host and are scaled inside the (jitted) loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from star_core.tasks import base
from star_core.tasks.data import batching, images, store
from star_core.tasks.models import vision

# Architectures an image task may name.
ARCHITECTURES = ("mlp", "mlp_ln", "cnn", "resnet")
# Pixel scale: uint8 images are divided by this inside the loss.
PIXEL_SCALE = 255.0


@dataclasses.dataclass(frozen=True)
class ImageClassification:
    """A classifier task. ``widths``: hidden widths (MLPs) or channels per conv/stage;
    ``strides``: one per conv layer or ResNet stage (unused by MLPs)."""

    name: str
    dataset: str
    architecture: str
    widths: tuple[int, ...]
    strides: tuple[int, ...] = ()
    batch_size: int = 128
    data_dir: str | None = None

    def __post_init__(self) -> None:
        images.image_info(self.dataset)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {list(ARCHITECTURES)}, got {self.architecture!r}"
            )
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths must be positive integers, got {self.widths!r}")
        if self.architecture in ("cnn", "resnet") and len(self.strides) != len(self.widths):
            raise ValueError(
                f"strides must have one entry per width ({len(self.widths)}), got {self.strides!r}"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    @property
    def num_classes(self) -> int:
        return images.image_info(self.dataset).num_classes

    @property
    def max_loss(self) -> float:
        return base.classifier_max_loss(self.num_classes)

    def init(self, key: jax.Array) -> base.Params:
        shape = images.image_info(self.dataset).shape
        widths, classes = tuple(self.widths), self.num_classes
        if self.architecture in ("mlp", "mlp_ln"):
            return vision.init_mlp(key, shape, widths, classes, self.architecture == "mlp_ln")
        if self.architecture == "cnn":
            return vision.init_cnn(key, shape, widths, classes)
        return vision.init_resnet(key, shape, widths, classes)

    def logits(self, params: base.Params, batch: base.Batch) -> jax.Array:
        x = jnp.asarray(batch["image"], jnp.float32) / PIXEL_SCALE
        if self.architecture in ("mlp", "mlp_ln"):
            return vision.mlp(params, x)
        if self.architecture == "cnn":
            return vision.cnn(params, x, tuple(self.strides))
        return vision.resnet(params, x, tuple(self.strides))

    def loss(self, params: base.Params, key: jax.Array, batch: base.Batch) -> jax.Array:
        del key  # Deterministic model: no dropout.
        return base.softmax_cross_entropy(self.logits(params, batch), jnp.asarray(batch["label"]))

    def normalizer(self, loss: jax.Array) -> jax.Array:
        return base.normalize_loss(loss, self.max_loss)

    def batches(
        self, seed: int, split: str = "train", copies: int | None = None
    ) -> Iterator[base.Batch]:
        if store.dataset_spec(self.dataset).in_memory:
            arrays = images.image_arrays(self.dataset, split, self.data_dir)
            return batching.array_batches(arrays, self.batch_size, seed, split, copies)
        size, read = images.image_reader(self.dataset, split, self.data_dir)
        return batching.record_batches(size, read, self.batch_size, seed, split, copies)
