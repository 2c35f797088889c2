"""Text corpora as tfds datasets, and their byte-level tokens.

``StarText`` is a tfds builder with one config per corpus, stored under
``<data_dir>/star_text/<name>/``. Its examples are documents ``{"text": str}``:
- the embedded default ``stdlib_docs``: the docstrings of ``STDLIB_MODULES`` (this Python's
  standard library, so every machine has it), module docstring first, then the public classes
  and functions each module defines, in name order;
- a user corpus (``star data build-text --name NAME FILE...``): the paragraphs (blocks separated
  by blank lines) of the named UTF-8 files, in the order given.
Every ``HELDOUT_EVERY``-th document goes to ``test``, the rest to ``train``. A corpus's name is a
folder name and never the name of a catalog dataset (``store.DATASETS``), so a task's ``dataset``
says by itself whether it is a corpus.

Builds and rebuilds hold the corpora's build lock (``building``): the default corpus is built
once, quietly, however many processes ask for it at once, and a reader of a corpus that is being
(re)built waits for the build.

Tokens are bytes (a deviation from the paper's 32k SentencePiece vocabulary, which needs cloud
access): token = byte + 1, with 0 reserved for padding / beginning of sentence, so
``BYTE_VOCAB = 257``.

The builder (``text_builder``) and tensorflow-datasets are imported on first use, so importing the
tasks never imports tfds (nor the protobuf runtime it pulls in).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from star_core.tasks.data import building
from star_core.tasks.data.store import DATASETS, dataset_spec, is_built, resolve_data_dir

logger = logging.getLogger(__name__)

# Standard-library modules whose docstrings form the embedded corpus (pure-Python, always present).
STDLIB_MODULES = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "cmd", "collections", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions",
    "functools", "gettext", "glob", "hashlib", "heapq", "inspect", "ipaddress", "itertools",
    "json", "logging", "math", "numbers", "operator", "os", "pathlib", "pickle", "pprint",
    "queue", "random", "re", "secrets", "shlex", "shutil", "statistics", "string", "struct",
    "subprocess", "tempfile", "textwrap", "threading", "timeit", "typing", "unittest",
    "urllib.parse", "uuid", "warnings", "weakref", "zipfile",
)  # fmt: skip
# Name of the embedded default corpus.
DEFAULT_CORPUS = "stdlib_docs"
# Every HELDOUT_EVERY-th document (1-based) is held out for the test split.
HELDOUT_EVERY = 10
# Byte-level vocabulary: 256 byte values shifted by one, plus the padding token 0.
BYTE_VOCAB = 257
PAD = 0
# Bytes placed between consecutive documents of a token stream.
DOCUMENT_SEPARATOR = b"\n\n"
# Corpus names become directory names: lower-case letters, digits and underscores.
CORPUS_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Version of the built corpora (the folder name under <data_dir>/star_text/<name>/).
TEXT_VERSION = "1.0.0"
# tfds name of the corpora (the folder under <data_dir>).
TEXT_TFDS_NAME = dataset_spec("text").tfds_name


def stdlib_documents() -> list[str]:
    """Docstrings of ``STDLIB_MODULES``: module first, then its public classes and functions."""
    documents = []
    for module_name in STDLIB_MODULES:
        module = importlib.import_module(module_name)
        documents.append(inspect.getdoc(module) or "")
        with warnings.catch_warnings():  # Reading deprecated members (typing.io) warns.
            warnings.simplefilter("ignore", DeprecationWarning)
            members = sorted(vars(module).items())
            for name, value in members:
                defined_here = getattr(value, "__module__", None) == module_name
                if name.startswith("_") or not defined_here:
                    continue
                if inspect.isclass(value) or inspect.isfunction(value):
                    documents.append(inspect.getdoc(value) or "")
    return [d for d in documents if d.strip()]


def file_documents(files: Sequence[str | os.PathLike]) -> list[str]:
    """Paragraphs (separated by blank lines) of UTF-8 text files, in order."""
    documents: list[str] = []
    for path in files:
        text = open(path, encoding="utf-8", errors="replace").read()  # noqa: SIM115
        documents.extend(p.strip() for p in re.split(r"\n\s*\n", text) if p.strip())
    return documents


def check_corpus_name(name: str) -> str:
    if not isinstance(name, str) or not CORPUS_NAME.match(name):
        raise ValueError(
            f"dataset must match {CORPUS_NAME.pattern} (e.g. 'my_notes'), got {name!r}"
        )
    if name in DATASETS:
        raise ValueError(
            f"dataset {name!r} names a catalog dataset ({', '.join(sorted(DATASETS))}); "
            "give the text corpus another name"
        )
    return name


def corpus_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The version folder of corpus ``name`` (``<data_dir>/star_text/<name>/<version>``)."""
    return resolve_data_dir(data_dir) / TEXT_TFDS_NAME / name / TEXT_VERSION


def build_text(
    name: str,
    files: Sequence[str | os.PathLike] = (),
    data_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
) -> None:
    """(Re)build corpus ``name`` from ``files`` (the stdlib docstrings when ``name`` is default).

    Holds the corpora's build lock, so readers wait for it; ``progress`` shows tfds's progress
    bars (``star data build-text``).
    """
    check_corpus_name(name)
    if (name == DEFAULT_CORPUS) == bool(files):
        raise ValueError(f"files must be given for every corpus but {DEFAULT_CORPUS!r}")
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"text file not found: {path}")
    root = resolve_data_dir(data_dir)
    build = functools.partial(_prepare, name, tuple(os.path.abspath(p) for p in files), root)
    with building.build_lock(root, TEXT_TFDS_NAME):
        building.run_locked(corpus_dir(name, root), build, progress=progress)
    _load_documents.cache_clear()
    _corpus_sequences.cache_clear()


def ensure_corpus(
    name: str, data_dir: str | os.PathLike | None = None, *, progress: bool = False
) -> None:
    """Make sure corpus ``name`` is built: the default one is built now if it is missing (one
    process builds, the others wait); a missing corpus of the user's raises FileNotFoundError
    naming `star data build-text`. Waits for a (re)build in progress."""
    check_corpus_name(name)
    path = corpus_dir(name, data_dir)
    if is_built(path):
        return
    root = resolve_data_dir(data_dir)
    with building.build_lock(root, TEXT_TFDS_NAME):
        if is_built(path):  # built meanwhile by another process
            return
        if name != DEFAULT_CORPUS:
            raise FileNotFoundError(
                f"text dataset {name!r} is not built in {root}; run "
                f"`star data build-text --name {name} FILE...`"
            )
        build = functools.partial(_prepare, name, (), root)
        building.run_locked(path, build, progress=progress)


def _prepare(name: str, files: tuple[str, ...], root: os.PathLike) -> None:
    """Run the tfds build of corpus ``name`` (the caller holds the build lock)."""
    import tensorflow_datasets as tfds

    from star_core.tasks.data.text_builder import StarText, TextConfig

    # The default corpus is one of BUILDER_CONFIGS, named by its string.
    config = TextConfig(name=name, files=files) if files else name
    builder = StarText(config=config, data_dir=str(root), file_format="array_record")
    mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS  # Rebuilds an existing corpus.
    logger.info("building text corpus %r in %s", name, root)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))


def load_documents(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[str, ...]:
    """Documents of one split of corpus ``name``; builds the default corpus on first use."""
    check_corpus_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['train', 'test'], got {split!r}")
    ensure_corpus(name, data_dir)
    return _load_documents(str(corpus_dir(name, data_dir)), split)


@functools.lru_cache(maxsize=16)
def _load_documents(path: str, split: str) -> tuple[str, ...]:
    import tensorflow_datasets as tfds

    source = tfds.builder_from_directory(path).as_data_source(split=split)
    return tuple(as_str(source[i]["text"]) for i in range(len(source)))


def corpus_sequences(
    name: str, split: str, seq_len: int, data_dir: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """``stream_sequences`` of a corpus split, cached per process (treat as read-only)."""
    return _corpus_sequences(name, split, seq_len, str(resolve_data_dir(data_dir)))


@functools.lru_cache(maxsize=16)
def _corpus_sequences(name: str, split: str, seq_len: int, root: str) -> dict[str, np.ndarray]:
    return stream_sequences(load_documents(name, split, root), seq_len)


def as_str(text: str | bytes) -> str:
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


def encode(text: str) -> np.ndarray:
    """Byte tokens (``byte + 1``) of the UTF-8 encoding of ``text``, int32."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + 1


def decode(tokens: Sequence[int]) -> str:
    """Inverse of ``encode`` (padding dropped)."""
    data = bytes(int(t) - 1 for t in tokens if int(t) != PAD)
    return data.decode("utf-8", errors="replace")


def stream_sequences(documents: Sequence[str], length: int) -> dict[str, np.ndarray]:
    """The documents as one token stream cut into windows of ``length + 1`` tokens, consecutive
    windows sharing one token: ``inputs``/``targets`` int32 (N, length), ``mask`` float32 ones."""
    joined = DOCUMENT_SEPARATOR.join(d.encode("utf-8") for d in documents)
    stream = np.frombuffer(joined, dtype=np.uint8).astype(np.int32) + 1
    count = (len(stream) - 1) // length
    if count < 1:
        raise ValueError(f"seq_len must be below the corpus length {len(stream)}, got {length}")
    windows = np.lib.stride_tricks.sliding_window_view(stream, length + 1)[::length][:count]
    windows = np.ascontiguousarray(windows)
    return {
        "inputs": windows[:, :-1],
        "targets": windows[:, 1:],
        "mask": np.ones((count, length), np.float32),
    }


def sentence_sequences(texts: Iterator[str] | Sequence[str], length: int) -> dict[str, np.ndarray]:
    """One sequence per sentence: ``[PAD] + bytes`` truncated/padded to ``length + 1`` tokens;
    ``mask`` marks the targets that are real bytes."""
    texts = list(texts)
    windows = np.full((len(texts), length + 1), PAD, np.int32)
    for row, text in enumerate(texts):
        tokens = encode(text)[:length]
        windows[row, 1 : 1 + len(tokens)] = tokens
    targets = windows[:, 1:]
    return {
        "inputs": windows[:, :-1],
        "targets": targets,
        "mask": (targets != PAD).astype(np.float32),
    }
