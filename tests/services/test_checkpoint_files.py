"""CheckpointStore: atomic writes, chunked reads, and no way out of the checkpoint root."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
from datetime import UTC, datetime

import pytest

from services.domain import CheckpointRecord, JobState, NotFound
from services.store import CheckpointStore, Store
from services.store.checkpoints import SUFFIX
from star_core.errors import ConfigError

DATA = bytes(range(256)) * 41  # 10,496 bytes


@pytest.fixture
def files(tmp_path):
    return CheckpointStore(tmp_path / "checkpoints")


def _record(name: str, size: int = 0) -> CheckpointRecord:
    return CheckpointRecord("ckpt-x", "job-x", 0, name, size, "", datetime(2030, 1, 1, tzinfo=UTC))


def test_write_then_read_back(files, tmp_path):
    stored = files.write("job-abc", 7, DATA)
    assert stored.file_name.startswith("job-abc/step_000000007-")
    assert stored.size_bytes == len(DATA)
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert (files.root / stored.file_name).read_bytes() == DATA
    assert not [p for p in (files.root / "job-abc").iterdir() if p.name.endswith(".tmp")]
    second = files.write("job-abc", 7, b"other")  # same step: a new file, the first is kept
    assert second.file_name != stored.file_name

    store = Store(tmp_path / "star.db")
    try:
        job, _ = store.create_job("{}")
        store.transition(job.job_id, JobState.RUNNING)
        record = store.add_checkpoint(job.job_id, 7, *stored)
        assert files.verify(record)
        assert files.read_chunk(record, 0, 100) == DATA[:100]
        assert files.read_chunk(record, 10_000) == DATA[10_000:]
        assert files.read_chunk(record, len(DATA)) == b""
        pieces = list(files.chunks(record, offset=1000, chunk_size=4096))
        assert [offset for offset, _ in pieces] == [1000, 5096, 9192]
        assert b"".join(data for _, data in pieces) == DATA[1000:]
        assert list(files.chunks(record, offset=len(DATA))) == []
        for bad in (-1, len(DATA) + 1):
            with pytest.raises(ConfigError) as err:
                files.read_chunk(record, bad)
            assert err.value.field == "offset"
        assert not files.verify(dataclasses.replace(record, sha256="0" * 64))
    finally:
        store.close()


@pytest.mark.parametrize("job_id", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_unsafe_job_ids_cannot_name_folders(files, job_id):
    with pytest.raises(ValueError):
        files.write(job_id, 0, b"x")


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "job-x/../../secret.txt",
        "job-x/../../../etc/passwd",
        "/etc/passwd",
        "SECRET_ABSOLUTE",
        "",
        ".",
        "job-x",  # a folder, not a file
        "job-x/missing.safetensors",
        "nul\x00byte",
        "link-out",
    ],
)
def test_names_cannot_escape_the_root(files, tmp_path, name):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (files.root / "job-x").mkdir()
    os.symlink(secret, files.root / "link-out")
    name = str(secret) if name == "SECRET_ABSOLUTE" else name
    record = _record(name)
    with pytest.raises(NotFound):
        files.path(record)
    with pytest.raises(NotFound):
        files.read_chunk(record, 0)
    with pytest.raises(NotFound):
        list(files.chunks(record))


def test_delete_never_leaves_the_root(files, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    stored = files.write("job-a", 1, DATA)
    records = [_record(stored.file_name), _record("../secret.txt"), _record(str(secret))]
    assert files.delete(records) == 1
    assert secret.read_text() == "keep me"
    assert not (files.root / "job-a").exists()  # emptied: removed
    assert files.delete(records) == 0  # already gone: nothing to do


def _plant(folder, name: str, data: bytes = b"partial") -> str:
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return f"{folder.name}/{name}"


def test_the_sweep_removes_temporary_and_unindexed_files(files, tmp_path):
    """What a SIGKILL leaves: a temporary file of a cut write, a complete file whose index row
    never landed, and a file whose row retention dropped before the process could delete it."""
    store = Store(tmp_path / "star.db")
    try:
        job, _ = store.create_job("{}")
        store.transition(job.job_id, JobState.RUNNING)
        indexed = store.add_checkpoint(job.job_id, 3, *files.write(job.job_id, 3, DATA))
        folder = files.root / job.job_id
        temporary = _plant(folder, f".step_000000006-0a1b2c3d{SUFFIX}.k2j4h5.tmp")
        unindexed = files.write(job.job_id, 6, DATA).file_name  # complete, never indexed
        other = _plant(files.root / "job-gone", f"step_000000001-deadbeef{SUFFIX}", DATA)
        foreign = _plant(folder, "notes.txt", b"a person's file")
        (files.root / "job-empty").mkdir()

        swept = files.sweep(store.checkpoint_file_names())

        assert swept.temporary == [temporary]
        assert sorted(swept.unindexed) == sorted([unindexed, other])
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [indexed.file_name.split("/")[1], "notes.txt"]
        )
        assert files.read_bytes(indexed) == DATA
        assert (files.root / foreign).read_bytes() == b"a person's file"  # not ours: left
        assert not (files.root / "job-gone").exists() and not (files.root / "job-empty").exists()
        assert files.sweep(store.checkpoint_file_names()) == ([], [])
    finally:
        store.close()


class _FullDisk:
    """A file object whose write stores half of the data, then fails as a full disk does."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.mark.parametrize("fault", ["write", "fsync"])
def test_a_write_that_fails_on_a_full_disk_leaves_no_file(files, tmp_path, monkeypatch, fault):
    store = Store(tmp_path / "star.db")
    try:
        job, _ = store.create_job("{}")
        store.transition(job.job_id, JobState.RUNNING)
        earlier = store.add_checkpoint(job.job_id, 1, *files.write(job.job_id, 1, DATA))
        before = sorted(p.name for p in (files.root / job.job_id).iterdir())
        if fault == "write":
            fdopen = os.fdopen
            monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDisk(fdopen(*a, **k)))
        else:

            def fsync(fd):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(OSError) as err:
            files.write(job.job_id, 2, DATA * 10)
        assert err.value.errno == errno.ENOSPC
        monkeypatch.undo()
        assert sorted(p.name for p in (files.root / job.job_id).iterdir()) == before
        assert files.read_bytes(earlier) == DATA  # the earlier checkpoint is whole
        assert store.latest_checkpoint(job.job_id) == earlier
    finally:
        store.close()
