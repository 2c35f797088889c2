"""Making sure the data of a set of tasks is there before they read it.

``ensure_task_data(tasks)`` runs where a job starts on a machine (the service's worker actors),
so that a job's data exists on a node before its workers need it:

- embedded data (digits, the default text corpus) is built if it is missing, quietly and under
  its build lock (``building``), so workers that start together on a node build it once;
- a missing prepared dataset (fashion_mnist, cifar10, imagenet32, lm1b) raises the
  FileNotFoundError that names ``star data prepare NAME`` (``store.missing_data_message``), and
  a missing corpus of the user's the one that names ``star data build-text``. Nothing is ever
  replaced by random data.

A task reads data when it has a ``dataset`` field: a catalog name (``store.DATASETS``) or, for
the language models, a text corpus (corpus names never collide with catalog names,
``text.check_corpus_name``). Its ``data_dir`` field, else ``$TFDS_DATA_DIR``, else
``~/.cache/star/tensorflow_datasets`` (``store.resolve_data_dir``), is resolved in this
process's environment, exactly as the task's own loaders resolve it, so the data is built where
they will read it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from star_core.tasks.data import digits, store, text


def ensure_dataset(
    dataset: str, data_dir: str | os.PathLike | None = None, *, progress: bool = False
) -> None:
    """Make sure ``dataset`` (a catalog name or a text corpus) is ready in the data directory:
    build embedded data if missing, raise FileNotFoundError for missing prepared data."""
    if dataset not in store.DATASETS:
        text.ensure_corpus(dataset, data_dir, progress=progress)
    elif dataset == "digits":
        digits.build_digits(data_dir, progress=progress)
    elif dataset == "text":
        text.ensure_corpus(text.DEFAULT_CORPUS, data_dir, progress=progress)
    elif not store.is_prepared(dataset, data_dir):
        raise FileNotFoundError(
            store.missing_data_message(dataset, store.resolve_data_dir(data_dir))
        )


def ensure_task_data(tasks: Iterable[Any]) -> None:
    """Make sure the data of every task in ``tasks`` is ready (see the module docstring).

    Takes task objects, not names: a run's ``task_args`` may change a task's ``dataset`` or
    ``data_dir`` (``MetaTrainConfig.make_task``).
    """
    for task in tasks:
        dataset = getattr(task, "dataset", None)
        if dataset is not None:
            ensure_dataset(dataset, getattr(task, "data_dir", None))
