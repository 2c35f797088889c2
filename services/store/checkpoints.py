"""``CheckpointStore``: the checkpoint files of the service, under one root folder.

A file is written once, atomically (temporary file in the target folder, fsync, ``os.replace``,
fsync of the folder: ``star_core.training.checkpoint.write_bytes_atomically``), under a name
that the store chooses: ``<job_id>/step_<step>-<random>.safetensors``. Clients never name files:
they hold checkpoint ids, which the index (``Store``) maps to a ``CheckpointRecord`` whose
``file_name`` is resolved here, and only inside the root: an absolute name, ``..``, or a
symbolic link that leads outside is refused with NotFound, as if the checkpoint did not exist.

Writing a checkpoint of a job::

    stored = checkpoints.write(job_id, step, data)           # the file is complete on disk
    record = store.add_checkpoint(job_id, step, *stored)     # then the index row + its event

(in that order: a crash in between leaves an unindexed file, never an index row without its
file). Serving it: ``for offset, chunk in checkpoints.chunks(record, offset): ...``. A write that
fails (ENOSPC, EIO) raises and leaves no file behind: the earlier checkpoints stay as they were.

Deleting: ``checkpoints.delete(records)`` after their index rows are gone (retention, DeleteJob).

The start-up sweep (:meth:`CheckpointStore.sweep`, run by the service under its data-directory
lock, before any job runs) removes what an interrupted write or deletion left behind:

- temporary files (``*.tmp``) of writes cut by a crash: never complete, never indexed;
- checkpoint files without an index row. Such a file is either a complete write whose index
  row never landed (the process died between ``write`` and ``add_checkpoint``) or a file whose
  row retention or DeleteJob already deleted (the process died before deleting the file). The
  two cannot be told apart, and indexing the second kind would bring back a checkpoint that was
  dropped, or of a deleted job. Nothing is lost by removing the first kind: the job resumes from
  its latest *indexed* checkpoint (its step is rewound to it) and writes that step again. So
  every unindexed file is removed, never indexed;
- job folders left empty.

Anything else under the root (files not named like ours) is left alone and logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from services.domain import CheckpointRecord, NotFound
from star_core.errors import ConfigError
from star_core.training.checkpoint import write_bytes_atomically

logger = logging.getLogger(__name__)

# FetchCheckpoint streams chunks of this size.
CHUNK_SIZE = 1 << 20
# Job ids become folder names: only these characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
SUFFIX = ".safetensors"
# The name of a checkpoint file in its job folder (see ``write``).
FILE_NAME = re.compile(r"step_\d{9,}-[0-9a-f]{8}" + re.escape(SUFFIX))
# Temporary files of atomic writes end so (star_core.training.checkpoint).
TEMPORARY_SUFFIX = ".tmp"


class StoredFile(NamedTuple):
    """A written checkpoint file: its name relative to the root, size and hex SHA-256."""

    file_name: str
    size_bytes: int
    sha256: str


class Swept(NamedTuple):
    """What the start-up sweep removed (names relative to the root)."""

    temporary: list[str]
    unindexed: list[str]


class CheckpointStore:
    """Checkpoint files under ``root`` (created if missing); see the module docstring."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, job_id: str, step: int, data: bytes) -> StoredFile:
        """Write ``data`` as a new checkpoint file of ``job_id`` at ``step``, atomically."""
        if not SAFE_NAME.fullmatch(job_id):
            raise ValueError(f"job id {job_id!r} cannot name a checkpoint folder")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        folder = self.root / job_id
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        name = f"{job_id}/step_{step:09d}-{secrets.token_hex(4)}{SUFFIX}"
        write_bytes_atomically(self.root / name, data)
        return StoredFile(name, len(data), hashlib.sha256(data).hexdigest())

    def _inside(self, name: str) -> Path | None:
        """``name`` resolved inside the root (None when it would lead outside or is the root)."""
        if not name or "\x00" in name or Path(name).is_absolute():
            return None
        path = (self.root / name).resolve()
        return path if path.is_relative_to(self.root) and path != self.root else None

    def path(self, record: CheckpointRecord) -> Path:
        """The record's file, resolved inside the root; NotFound if it is missing or outside."""
        path = self._inside(record.file_name)
        if path is None or not path.is_file():
            raise NotFound(f"checkpoint {record.checkpoint_id!r}: its file is not available")
        return path

    def delete(self, records: Iterable[CheckpointRecord]) -> int:
        """Delete the files of ``records`` (already gone: skipped), then their job folders if
        that left them empty; returns how many files were deleted."""
        deleted, folders = 0, set()
        for record in records:
            path = self._inside(record.file_name)
            if path is None:
                logger.warning(
                    "checkpoint %s: not deleting %r (outside the root)",
                    record.checkpoint_id,
                    record.file_name,
                )
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted += 1
            if path.parent != self.root:
                folders.add(path.parent)
        for folder in folders:
            _remove_if_empty(folder)
        return deleted

    def sweep(self, indexed: Collection[str]) -> Swept:
        """Remove temporary files, unindexed checkpoint files and empty job folders (see the
        module docstring); ``indexed`` holds the file name of every index row. Run it only
        while nothing writes checkpoints (the service's start, under its data-directory lock).
        """
        swept = Swept([], [])
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()):
            for path in sorted(folder.iterdir()):
                name = f"{folder.name}/{path.name}"
                if path.is_symlink() or not path.is_file():
                    logger.warning("checkpoint sweep: leaving %s (not a file of ours)", name)
                elif path.name.endswith(TEMPORARY_SUFFIX):
                    path.unlink()
                    swept.temporary.append(name)
                elif FILE_NAME.fullmatch(path.name) and name not in indexed:
                    path.unlink()
                    swept.unindexed.append(name)
                elif name not in indexed:
                    logger.warning("checkpoint sweep: leaving %s (not a file of ours)", name)
            _remove_if_empty(folder)
        if swept.temporary or swept.unindexed:
            logger.warning(
                "checkpoint sweep: removed %d temporary and %d unindexed files under %s",
                len(swept.temporary),
                len(swept.unindexed),
                self.root,
            )
        return swept

    def open(self, record: CheckpointRecord) -> BinaryIO:
        """The record's file opened for binary reading (see :meth:`path`)."""
        return open(self.path(record), "rb")  # noqa: SIM115 (the caller closes it)

    def read_bytes(self, record: CheckpointRecord) -> bytes:
        """The whole file, checked against the record's size and SHA-256 (ValueError if not:
        a corrupt checkpoint is never used to resume or warm-start a job)."""
        data = self.path(record).read_bytes()
        if len(data) != record.size_bytes or hashlib.sha256(data).hexdigest() != record.sha256:
            raise ValueError(
                f"checkpoint {record.checkpoint_id!r}: the file does not match its"
                " recorded size and SHA-256"
            )
        return data

    def read_chunk(self, record: CheckpointRecord, offset: int, length: int = CHUNK_SIZE) -> bytes:
        """Up to ``length`` bytes from ``offset`` (b"" at the end of the file).

        ConfigError(offset) when offset is negative or past the end of the file.
        """
        with self.open(record) as handle:
            _check_offset(offset, os.fstat(handle.fileno()).st_size)
            handle.seek(offset)
            return handle.read(length)

    def chunks(
        self, record: CheckpointRecord, offset: int = 0, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[tuple[int, bytes]]:
        """``(offset, data)`` pieces of the file from ``offset`` to its end, in order.

        The file is opened (and ``offset`` checked) when iteration starts; an empty remainder
        yields nothing.
        """
        with self.open(record) as handle:
            _check_offset(offset, os.fstat(handle.fileno()).st_size)
            handle.seek(offset)
            while data := handle.read(chunk_size):
                yield offset, data
                offset += len(data)

    def verify(self, record: CheckpointRecord) -> bool:
        """Whether the file's size and SHA-256 match the record."""
        digest, size = hashlib.sha256(), 0
        with self.open(record) as handle:
            while data := handle.read(CHUNK_SIZE):
                digest.update(data)
                size += len(data)
        return size == record.size_bytes and digest.hexdigest() == record.sha256


def _check_offset(offset: int, size: int) -> None:
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= size:
        raise ConfigError(
            "offset", f"offset must be between 0 and the file size {size}, got {offset!r}"
        )


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or already gone)
        folder.rmdir()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
