"""The two streaming calls, made robust: a watch that survives cuts, a resumable download.

**Watch** (:func:`follow`). ``WatchJob`` sends a job's events in order of ``seq`` and always
ends after the event that moves the job to SUCCEEDED, FAILED or CANCELLED. A stream that is cut
(a transient status, or an end without that event) is opened again after the last ``seq`` seen
(``WatchJobRequest.after_seq``), so no event is lost or repeated. After
:attr:`RetryPolicy.attempts` reopenings in a row without a new event, the watch fails. A watch
that starts after the job's last event gets that terminal event again (the server sends it), so
it always ends with the job's final state.

**Download** (:func:`download`). Chunks are appended to ``FILE.part``. A cut download goes on
from the size of ``FILE.part`` (``FetchCheckpointRequest.offset``): after a transient error, or
in a later call. After the last chunk the SHA-256 of the whole file is compared with the one the
server sent with the chunks, and ``FILE.part`` is renamed to ``FILE`` in one step, so ``FILE``
is never half-written. A mismatch deletes ``FILE.part`` and fails (DATA_LOSS; fetching again
downloads afresh). A ``FILE.part`` that does not fit the checkpoint (longer than it, or already
complete) is downloaded again from the start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from services.client.errors import StarError, from_rpc_error
from services.generated.star.v1 import job_pb2

logger = logging.getLogger(__name__)

TERMINAL_STATES = frozenset(
    {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
)

# open_call(position, timeout) -> a started streaming call (iterable, with .cancel()).
OpenCall = Callable[[int, float | None], Any]
# progress(bytes received so far, size of the whole file)
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a cut stream is reopened: at most ``attempts`` times in a row without progress,
    waiting ``backoff_s`` before the first reopening, doubling up to ``max_backoff_s``. The
    default gives a restarted server about 40 s to come back."""

    attempts: int = 8
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before reopening after ``failures`` (>= 1) failures in a row."""
        return min(self.backoff_s * 2 ** (failures - 1), self.max_backoff_s)


@dataclasses.dataclass(frozen=True)
class Fetched:
    """A downloaded checkpoint: where it is, its size and its (verified) SHA-256."""

    path: Path
    size_bytes: int
    sha256: str


def is_terminal(event: job_pb2.JobEvent) -> bool:
    """Whether ``event`` moved its job to SUCCEEDED, FAILED or CANCELLED (the stream's last)."""
    return event.HasField("state_change") and event.state_change.to_state in TERMINAL_STATES


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def follow(
    open_call: OpenCall,
    job_id: str,
    after_seq: int,
    retry: RetryPolicy,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[job_pb2.JobEvent]:
    """The job's events after ``after_seq`` up to and including the terminal one (see the
    module docstring); ``deadline`` (``time.monotonic()``) ends the watch with
    DEADLINE_EXCEEDED."""
    failures = 0
    while True:
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        call = open_call(after_seq, timeout)
        try:
            for event in call:
                if is_terminal(event):  # also one at or before after_seq: the job has ended
                    yield event
                    return
                if event.seq > after_seq:
                    after_seq, failures = event.seq, 0
                    yield event
            reason = "the stream ended before the job did"
        except grpc.RpcError as err:
            error = from_rpc_error(err, "WatchJob")
            if not error.transient or _expired(deadline):
                raise error from None
            reason = f"{error.code}: {error.message}"
        finally:
            call.cancel()
        failures += 1
        if failures > retry.attempts:
            raise StarError(
                "UNAVAILABLE",
                f"lost the events of {job_id} after seq {after_seq}: {reason}"
                f" ({retry.attempts} reconnections failed)",
            )
        logger.info("watch of %s cut (%s); reopening after seq %d", job_id, reason, after_seq)
        sleep(retry.delay(failures))


class _Announced(NamedTuple):
    """What the server says about the whole file (the same in every chunk)."""

    total_size: int
    sha256: str


def part_path(out: Path) -> Path:
    """Where the bytes of ``out`` gather until they are complete and verified."""
    return out.with_name(out.name + ".part")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _receive(
    open_call: OpenCall, checkpoint_id: str, part: Path, progress: Progress | None
) -> _Announced | None:
    """Append the chunks from the size of ``part`` on; what the server said about the file
    (None if it sent no chunk)."""
    offset, announced, file = _size(part), None, None
    call = open_call(offset, None)
    try:
        for chunk in call:
            this = _Announced(chunk.total_size, chunk.sha256)
            if chunk.offset != offset or announced not in (None, this):
                raise StarError(
                    "DATA_LOSS",
                    f"{checkpoint_id}: the server sent a chunk at byte {chunk.offset}"
                    f" (expected {offset}) or changed the file's size or sha256 mid-download",
                )
            announced = this
            file = file or part.open("ab")  # opened at the first chunk: no empty .part
            file.write(chunk.data)
            offset += len(chunk.data)
            if progress is not None:
                progress(offset, announced.total_size)
        if file is not None:
            file.flush()
            os.fsync(file.fileno())
    finally:
        if file is not None:
            file.close()
        call.cancel()
    return announced


def _verify_and_rename(part: Path, out: Path, announced: _Announced, checkpoint_id: str) -> None:
    size = _size(part)
    with part.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if (size, digest) != announced:
        part.unlink()
        raise StarError(
            "DATA_LOSS",
            f"{checkpoint_id}: got {size} bytes with sha256 {digest}, the server announced"
            f" {announced.total_size} bytes with sha256 {announced.sha256}; deleted {part},"
            " run again",
        )
    os.replace(part, out)
    directory = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _fetch_until_complete(
    open_call: OpenCall,
    checkpoint_id: str,
    part: Path,
    retry: RetryPolicy,
    progress: Progress | None,
    sleep: Callable[[float], None],
) -> _Announced:
    """Receive until the server sent the whole file; restart from 0 once if ``part`` does not
    fit it; reopen after transient errors (``retry.attempts`` in a row without progress)."""
    failures, restarted = 0, False
    while True:
        before = _size(part)
        try:
            announced = _receive(open_call, checkpoint_id, part, progress)
            if announced is not None and _size(part) >= announced.total_size:
                return announced
            problem = "the stream ended early" if announced is not None else "no chunk"
        except grpc.RpcError as err:
            error = from_rpc_error(err, "FetchCheckpoint")
            if not (error.transient or (error.code == "INVALID_ARGUMENT" and before)):
                raise error from None
            problem = f"{error.code}: {error.message}"
        if problem.startswith(("no chunk", "INVALID_ARGUMENT")) and before and not restarted:
            logger.warning(
                "%s does not fit %s (%s); downloading it again", part, checkpoint_id, problem
            )
            part.unlink()
            restarted = True
            continue
        failures = 0 if _size(part) > before else failures + 1
        if failures > retry.attempts or problem == "no chunk":
            raise StarError(
                "UNAVAILABLE",
                f"{checkpoint_id}: download failed at byte {_size(part)}: {problem}"
                f" (run again to resume from {part})",
            )
        sleep(retry.delay(max(failures, 1)))


def download(
    open_call: OpenCall,
    checkpoint_id: str,
    out: Path,
    retry: RetryPolicy,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """Download checkpoint ``checkpoint_id`` to ``out`` (see the module docstring);
    ``open_call(offset, None)`` starts FetchCheckpoint at ``offset``."""
    part = part_path(out)
    announced = _fetch_until_complete(open_call, checkpoint_id, part, retry, progress, sleep)
    _verify_and_rename(part, out, announced, checkpoint_id)
    return Fetched(out, announced.total_size, announced.sha256)
