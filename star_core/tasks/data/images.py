"""Image datasets as ``image`` uint8 (N, H, W, C) and ``label`` int32 arrays.

Small datasets (digits, Fashion-MNIST, CIFAR-10) are read whole into memory once per process
(``functools.lru_cache``), so a new batch iterator costs nothing but drawing its orders.
ImageNet 32x32 (1.28M images) stays on disk: ``image_reader`` returns a function that reads the
records of a batch of indices through the random-access ``tfds.data_source``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

import numpy as np

from star_core.tasks.data import digits, store


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """Static shape facts the models need before any data is read."""

    shape: tuple[int, int, int]
    num_classes: int


IMAGE_DATASETS = {
    "digits": ImageInfo(digits.DIGITS_SHAPE, digits.DIGITS_CLASSES),
    "fashion_mnist": ImageInfo((28, 28, 1), 10),
    "cifar10": ImageInfo((32, 32, 3), 10),
    "imagenet32": ImageInfo((32, 32, 3), 1000),
}


def image_info(name: str) -> ImageInfo:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"dataset must be one of {sorted(IMAGE_DATASETS)}, got {name!r}")
    return IMAGE_DATASETS[name]


def stack_records(records: Sequence[dict]) -> dict[str, np.ndarray]:
    """Records ``{"image", "label", ...}`` -> ``image`` uint8 and ``label`` int32 arrays."""
    return {
        "image": np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records]),
        "label": np.asarray([r["label"] for r in records], dtype=np.int32),
    }


def image_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """The whole split of in-memory dataset ``name`` (cached per process and data directory)."""
    image_info(name)
    if not store.dataset_spec(name).in_memory:
        raise ValueError(f"dataset {name!r} is read per batch, not into memory")
    if name == "digits":
        return digits.load_digits_arrays(split, data_dir)
    return _load_prepared(name, split, str(store.resolve_data_dir(data_dir)))


@functools.lru_cache(maxsize=8)
def _load_prepared(name: str, split: str, root: str) -> dict[str, np.ndarray]:
    source = store.open_split(name, split, root)
    return stack_records([source[i] for i in range(len(source))])


def image_reader(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[int, Callable[[np.ndarray], dict[str, np.ndarray]]]:
    """``(num_examples, read)`` for an on-disk dataset; ``read(indices)`` stacks those records."""
    image_info(name)
    source = _open_cached(name, split, str(store.resolve_data_dir(data_dir)))

    def read(indices: np.ndarray) -> dict[str, np.ndarray]:
        return stack_records([source[int(i)] for i in indices])

    return len(source), read


@functools.lru_cache(maxsize=8)
def _open_cached(name: str, split: str, root: str):
    return store.open_split(name, split, root)
