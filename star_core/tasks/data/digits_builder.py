"""The tfds builder of the embedded digits dataset (see ``digits``, which imports it on first use).

Kept apart so that ``import star_core.tasks`` does not import tensorflow-datasets: defining a
``tfds.core.GeneratorBasedBuilder`` subclass needs tfds at import time.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from star_core.tasks.data.digits import (
    DIGITS_CLASSES,
    DIGITS_PIXEL_MAX,
    DIGITS_SHAPE,
    DIGITS_TOTAL_SIZE,
    DIGITS_TRAIN_SIZE,
    DIGITS_VERSION,
)
from star_core.tasks.data.embedded_builder import EmbeddedBuilder


class StarDigits(EmbeddedBuilder):
    """UCI 8x8 handwritten digits, read from scikit-learn's bundled copy."""

    VERSION = tfds.core.Version(DIGITS_VERSION)
    RELEASE_NOTES = {"1.0.0": "First release: fixed 1437/360 split, uint8 pixels 0..255."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCI optical handwritten digits (8x8), from scikit-learn.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=DIGITS_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=DIGITS_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data ships inside scikit-learn.
        return {
            "train": self._generate_examples(0, DIGITS_TRAIN_SIZE),
            "test": self._generate_examples(DIGITS_TRAIN_SIZE, DIGITS_TOTAL_SIZE),
        }

    def _generate_examples(self, start: int, stop: int):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels = np.rint(bunch.images * (255.0 / DIGITS_PIXEL_MAX)).astype(np.uint8)
        for index in range(start, stop):
            yield index, {"image": pixels[index][..., None], "label": int(bunch.target[index])}
