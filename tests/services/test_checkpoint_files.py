"""CheckpointStore: atomic writes, chunked reads, and no way out of the checkpoint root."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from datetime import UTC, datetime

import pytest

from services.domain import CheckpointRecord, JobState, NotFound
from services.store import CheckpointStore, Store
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
