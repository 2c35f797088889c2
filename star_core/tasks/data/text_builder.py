"""The tfds builder of the text corpora (see ``text``, which imports it on first use).

Kept apart so that ``import star_core.tasks`` does not import tensorflow-datasets: defining a
``tfds.core.GeneratorBasedBuilder`` subclass needs tfds at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow_datasets as tfds

from star_core.tasks.data.embedded_builder import EmbeddedBuilder
from star_core.tasks.data.text import (
    DEFAULT_CORPUS,
    HELDOUT_EVERY,
    TEXT_VERSION,
    file_documents,
    stdlib_documents,
)


@dataclasses.dataclass(eq=False)
class TextConfig(tfds.core.BuilderConfig):
    """A corpus: ``files`` to read, or none for the stdlib docstrings."""

    files: tuple[str, ...] = ()


class StarText(EmbeddedBuilder):
    """Byte-level text corpora: the stdlib docstrings, or text files the user names."""

    VERSION = tfds.core.Version(TEXT_VERSION)
    RELEASE_NOTES = {"1.0.0": "First release: documents, 1 in 10 held out."}
    BUILDER_CONFIGS = [TextConfig(name=DEFAULT_CORPUS, description="stdlib docstrings")]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Documents of a text corpus, for byte-level language models.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        files = self.builder_config.files
        documents = file_documents(files) if files else stdlib_documents()
        if len(documents) < HELDOUT_EVERY:
            raise ValueError(
                f"files must hold at least {HELDOUT_EVERY} paragraphs, got {len(documents)}"
            )
        heldout = [(i, d) for i, d in enumerate(documents) if i % HELDOUT_EVERY == 9]
        kept = [(i, d) for i, d in enumerate(documents) if i % HELDOUT_EVERY != 9]
        return {"train": self._generate_examples(kept), "test": self._generate_examples(heldout)}

    def _generate_examples(self, documents: Sequence[tuple[int, str]]):
        for index, document in documents:
            yield index, {"text": document}
