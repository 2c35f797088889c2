"""Where datasets live, which ones exist, and how a prepared split is opened.

Every dataset is a tensorflow-datasets dataset stored as array_record files and read with
``tfds.data_source`` (random access, no TensorFlow at read time). The data directory is
``$TFDS_DATA_DIR`` when set, else ``~/.cache/star/tensorflow_datasets`` (``DEFAULT_DATA_DIR``);
a task's ``data_dir`` field overrides both.

Two kinds of dataset:
- embedded (``digits``, ``text``): built offline on first use from data every machine has
  (``build``: one process builds, under a lock, while the others wait);
- prepared (``fashion_mnist``, ``cifar10``, ``lm1b``, ``imagenet32``): downloaded and converted
  once by ``star data prepare NAME`` (needs network access and TensorFlow). A missing prepared
  dataset raises one ``FileNotFoundError`` naming that command; nothing falls back to random data.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

# Environment variable tensorflow-datasets itself honours for its data directory.
DATA_DIR_ENV = "TFDS_DATA_DIR"
# Data directory when neither a task's data_dir nor $TFDS_DATA_DIR is given.
DEFAULT_DATA_DIR = Path("~/.cache/star/tensorflow_datasets")
# The one-line install that makes `star data prepare` possible (TensorFlow is only needed to
# download and convert the paper's datasets, never to read them; tfds 4.9.10 imports
# importlib_resources when it looks up download checksums).
PREPARE_INSTALL = "pip install tensorflow importlib_resources"
# Name of a finished version folder (``1.0.0``). tfds builds into ``incomplete.XXXX_1.0.0`` and
# renames it when done, so only folders named like this hold a whole dataset.
VERSION_FOLDER = re.compile(r"^\d+\.\d+\.\d+$")
# File tfds writes last into a version folder (before the rename that publishes it).
INFO_FILE = "dataset_info.json"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset the tasks can read.

    ``tfds_name`` is the tensorflow-datasets name; ``in_memory`` says whether the loaders read the
    whole split into numpy arrays (small datasets) or sample records from disk per batch.
    """

    name: str
    tfds_name: str
    description: str
    embedded: bool
    in_memory: bool
    splits: tuple[str, ...] = ("train", "test")


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("digits", "star_digits", "UCI 8x8 digits from scikit-learn", True, True),
        DatasetSpec(
            "text", "star_text", "byte-level text corpora (default: stdlib docs)", True, True
        ),
        DatasetSpec("fashion_mnist", "fashion_mnist", "Fashion-MNIST 28x28x1", False, True),
        DatasetSpec("cifar10", "cifar10", "CIFAR-10 32x32x3", False, True),
        DatasetSpec(
            "imagenet32",
            "imagenet_resized/32x32",
            "ImageNet 32x32x3",
            False,
            False,
            ("train", "validation"),
        ),
        DatasetSpec("lm1b", "lm1b", "One Billion Word benchmark", False, False),
    )
}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$TFDS_DATA_DIR``, else ``DEFAULT_DATA_DIR``."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def dataset_spec(name: str) -> DatasetSpec:
    """The catalog entry ``name``; ValueError listing the known datasets otherwise."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def missing_data_message(name: str, data_dir: Path) -> str:
    """The one-line message of a missing prepared dataset."""
    return (
        f"dataset {name!r} is not prepared in {data_dir}; run `star data prepare {name}` "
        f"(needs network access and `{PREPARE_INSTALL}`), or set {DATA_DIR_ENV} to a directory "
        "that holds it"
    )


def is_built(version_dir: Path) -> bool:
    """Whether ``version_dir`` (``<data_dir>/<dataset>/[<config>/]<version>``) is a finished build:
    a version folder holding dataset_info.json (never a half-built ``incomplete.*`` folder)."""
    return bool(VERSION_FOLDER.match(version_dir.name)) and (version_dir / INFO_FILE).is_file()


def built_versions(dataset_dir: Path) -> list[Path]:
    """The finished version folders in ``dataset_dir`` (see ``is_built``)."""
    if not dataset_dir.is_dir():
        return []
    return sorted(path for path in dataset_dir.iterdir() if is_built(path))


def is_prepared(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether a finished build of dataset ``name``, with its array_record files, is in the data
    directory."""
    root = resolve_data_dir(data_dir) / dataset_spec(name).tfds_name
    return any(any(path.glob("*.array_record*")) for path in built_versions(root))


def open_split(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Any:
    """Random-access source of one split of prepared dataset ``name`` (no download, no TF).

    Raises FileNotFoundError (see ``missing_data_message``) when the dataset is not prepared in
    array_record format.
    """
    import tensorflow_datasets as tfds

    spec = dataset_spec(name)
    if split not in spec.splits:
        raise ValueError(f"split must be one of {list(spec.splits)}, got {split!r}")
    root = resolve_data_dir(data_dir)
    try:
        return tfds.data_source(spec.tfds_name, split=split, data_dir=str(root), download=False)
    except (NotImplementedError, FileNotFoundError, AssertionError) as err:
        raise FileNotFoundError(missing_data_message(name, root)) from err
