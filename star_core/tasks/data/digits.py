"""The embedded image dataset: UCI handwritten digits (8x8, 10 classes) as a tfds dataset.

scikit-learn ships the 1797 images of the UCI "Optical Recognition of Handwritten Digits" test
set inside its wheel, so this builder works offline on every machine. Pixels (integers 0..16)
are rescaled to uint8 ``round(x * 255 / 16)`` so that every image dataset of the tasks uses the
same 0..255 convention. The split is fixed: the first ``DIGITS_TRAIN_SIZE`` images in
scikit-learn's order are ``train``, the remaining ones ``test``.

The builder writes array_record files with tfds's own writer (``download_and_prepare`` with
``file_format="array_record"``), which needs no TensorFlow; it runs automatically and quietly the
first time a digits task asks for data, in one process at a time (``building``: the others wait
for it). The builder class lives in ``digits_builder`` and is imported on first use, like
tensorflow-datasets itself: importing the tasks never imports tfds (nor the protobuf runtime it
pulls in).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from star_core.tasks.data import building
from star_core.tasks.data.store import dataset_spec, resolve_data_dir

logger = logging.getLogger(__name__)

# Number of images in the train split; the other 1797 - 1437 = 360 form the test split (80/20).
DIGITS_TRAIN_SIZE = 1437
# Total number of images scikit-learn ships.
DIGITS_TOTAL_SIZE = 1797
# Largest pixel value in the UCI data (pixels count set bits in 4x4 blocks of a 32x32 bitmap).
DIGITS_PIXEL_MAX = 16
DIGITS_SHAPE = (8, 8, 1)
DIGITS_CLASSES = 10
# Version of the built dataset (the folder name under <data_dir>/star_digits/).
DIGITS_VERSION = "1.0.0"


def build_digits(data_dir: str | os.PathLike | None = None, *, progress: bool = False) -> None:
    """Build the digits dataset in the data directory unless it is already there.

    Safe when processes race: one builds, the others wait for it (``building.build_once``).
    ``progress`` shows tfds's progress bars (for a person at a terminal; off in library code).
    """
    root = resolve_data_dir(data_dir)
    tfds_name = dataset_spec("digits").tfds_name
    version_dir = root / tfds_name / DIGITS_VERSION
    build = functools.partial(_prepare, root)
    building.build_once(root, tfds_name, version_dir, build, progress=progress)


def _prepare(root: Path) -> None:
    from star_core.tasks.data.digits_builder import StarDigits

    logger.info("building the digits dataset in %s", root)
    StarDigits(data_dir=str(root), file_format="array_record").download_and_prepare()


def load_digits_arrays(
    split: str, data_dir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """The whole digits split as numpy arrays ``image`` (N, 8, 8, 1) uint8 and ``label`` int32.

    Builds the dataset on first use; cached per process and data directory, so creating batch
    iterators is cheap. The arrays are shared: treat them as read-only.
    """
    spec = dataset_spec("digits")
    if split not in spec.splits:
        raise ValueError(f"split must be one of {list(spec.splits)}, got {split!r}")
    return _load_digits(split, str(resolve_data_dir(data_dir)))


@functools.lru_cache(maxsize=8)
def _load_digits(split: str, root: str) -> dict[str, np.ndarray]:
    import tensorflow_datasets as tfds

    build_digits(root)
    source = tfds.data_source(
        dataset_spec("digits").tfds_name, split=split, data_dir=root, download=False
    )
    records = [source[i] for i in range(len(source))]
    return {
        "image": np.stack([r["image"] for r in records]).astype(np.uint8),
        "label": np.asarray([r["label"] for r in records], dtype=np.int32),
    }
