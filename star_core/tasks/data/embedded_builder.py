"""The base class of the embedded datasets' tfds builders: nothing to download, nothing printed.

tfds builders print two lines to stdout around every build ("Downloading and preparing dataset
Unknown size ...", "Dataset ... downloaded and prepared to ..."). The embedded datasets are
built inside libraries and Ray workers on first use, where nothing may print, so their builders
report through ``logging`` instead. Like the builders, this module imports tensorflow-datasets
and is imported on first use only.
"""

from __future__ import annotations

import logging

import tensorflow_datasets as tfds

logger = logging.getLogger(__name__)


# tfds has no type information: mypy takes its builder for object, whose __init_subclass__
# takes no skip_registration.
class EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # type: ignore[call-arg]
    """A builder of data this machine already has: no download, reports through logging."""

    # Nothing is downloaded, so there are no URL checksums to look up. (tfds 4.9.10's lookup of
    # a checksums file next to the builder's code imports the absent `importlib_resources`.)
    url_infos = None

    def _log_download_bytes(self) -> None:
        logger.info("building %s in %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        logger.info("built %s in %s", self.name, self.data_dir)
