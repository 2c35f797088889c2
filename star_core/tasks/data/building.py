"""Building an embedded dataset once, however many processes ask for it at the same moment.

The embedded datasets (digits, the text corpora) are built on first use, and on a fresh machine
many processes use them first at the same moment: the workers of a job on one node, the nodes of
a cluster that share a data directory. tfds alone is not safe there: every process builds into a
folder of its own (``incomplete.XXXX_1.0.0``) and renames it to ``1.0.0`` when done, and every
rename but the first fails ("Destination ... already exists").

So a build runs under an inter-process lock of its dataset, a ``filelock.FileLock`` (``flock``) on
``<data_dir>/.locks/<dataset>.lock``, which the kernel releases if its holder dies:

1. a reader that finds the finished version folder (``store.is_built``) reads it, with no lock;
2. otherwise it takes the lock (waiting while another process builds), looks again, and builds
   only if the folder is still missing. One process builds; the others wait, then read its files.

tfds publishes a version folder by renaming a complete one, so a half-built folder is never read;
an ``incomplete.*`` folder that a killed build left behind is removed by the next build.

Builds are quiet: tfds's progress bars ("Generating splits...", "Shuffling...") show only when a
caller asks (``progress=True``, the ``star data`` commands); library and worker code never do.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from star_core.tasks.data import store

logger = logging.getLogger(__name__)

# Folder of the lock files, inside the data directory (hidden: it holds no dataset).
LOCK_FOLDER = ".locks"
# Seconds a process waits for another one's build (seconds in practice) before it gives up.
LOCK_TIMEOUT_S = 600.0
# Prefix of the folders tfds builds into before renaming them to their version.
INCOMPLETE_PREFIX = "incomplete."


def lock_path(root: Path, tfds_name: str) -> Path:
    """The lock file of dataset ``tfds_name`` in data directory ``root``."""
    return root / LOCK_FOLDER / f"{tfds_name.replace('/', '-')}.lock"


@contextlib.contextmanager
def build_lock(root: Path, tfds_name: str) -> Iterator[None]:
    """Hold the build lock of ``tfds_name`` in ``root``, waiting while another process holds it.

    Raises TimeoutError naming the lock file after ``LOCK_TIMEOUT_S`` seconds of waiting.
    """
    import filelock

    path = lock_path(root, tfds_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.info("waiting for another process to finish building %s in %s", tfds_name, root)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except filelock.Timeout as err:
            raise TimeoutError(
                f"another process has been building {tfds_name} for {LOCK_TIMEOUT_S:.0f} s "
                f"(lock {path}); if none is running, check that the file system supports locks"
            ) from err
    try:
        yield
    finally:
        lock.release()


def build_once(
    root: Path,
    tfds_name: str,
    version_dir: Path,
    build: Callable[[], None],
    *,
    progress: bool = False,
) -> None:
    """Run ``build`` unless ``version_dir`` is already built; at most one process builds it."""
    if store.is_built(version_dir):
        return
    with build_lock(root, tfds_name):
        if not store.is_built(version_dir):  # another process may have built it meanwhile
            run_locked(version_dir, build, progress=progress)


def run_locked(version_dir: Path, build: Callable[[], None], *, progress: bool = False) -> None:
    """Run ``build``, which writes ``version_dir``; the caller holds the dataset's build lock.

    Leftovers of killed builds of that version are removed first (no other build of this dataset
    can be running), and tfds shows progress bars only when ``progress`` is True.
    """
    for leftover in version_dir.parent.glob(f"{INCOMPLETE_PREFIX}*_{version_dir.name}"):
        logger.info("removing %s, left by a build that did not finish", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    with progress_bars(progress):
        build()


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """tfds's progress bars on or off for the duration (the process-wide setting is restored)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import tqdm_utils

    before = getattr(tqdm_utils, "_active", True)  # tfds has a setter but no getter
    tfds.display_progress_bar(enabled)
    try:
        yield
    finally:
        tfds.display_progress_bar(before)
