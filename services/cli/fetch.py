"""``star fetch CHECKPOINT_ID --out FILE``: download a checkpoint, resumably, and verify it.

Chunks are appended to ``FILE.part``. A download that is cut is continued from the size of
``FILE.part`` (``FetchCheckpointRequest.offset``): by the command itself after a transient
error, or by running the command again. After the last chunk the SHA-256 of the whole file is
compared with the one the server sent with the chunks, and ``FILE.part`` is renamed to ``FILE``
in one step, so ``FILE`` is never half-written. A mismatch deletes ``FILE.part`` and fails
(exit 1; run the command again to download afresh). A ``FILE.part`` that does not fit the
checkpoint (longer than it, or already complete) is downloaded again from the start.

``--out`` naming an existing directory writes ``DIR/CHECKPOINT_ID.safetensors``. Load the file
with ``star_core.load_optimizer``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from services.cli.client import SERVER_ERROR_EXIT, ClientError, add_connection_flags, connect

logger = logging.getLogger(__name__)

# Reopenings of a cut download in a row (no new bytes in between) before giving up.
FETCH_ATTEMPTS = 5
# Seconds before the first reopening; doubles each time.
RETRY_BACKOFF_S = 0.5
CHECKPOINT_SUFFIX = ".safetensors"


class Download(NamedTuple):
    """What the server says about the whole file (the same in every chunk)."""

    total_size: int
    sha256: str


def register(subparsers) -> None:
    parser = subparsers.add_parser("fetch", help="download a checkpoint (resumable, verified)")
    parser.add_argument("checkpoint_id", metavar="CHECKPOINT_ID")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help=f"file to write (a directory: DIR/CHECKPOINT_ID{CHECKPOINT_SUFFIX})",
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    out = args.out / f"{args.checkpoint_id}{CHECKPOINT_SUFFIX}" if args.out.is_dir() else args.out
    if not out.parent.is_dir():
        raise NotADirectoryError(f"--out {out}: {out.parent} is not a directory")
    with connect(args) as stub:
        download = fetch_checkpoint(stub, args.checkpoint_id, out)
    print(f"wrote {out} ({download.total_size} bytes, sha256 {download.sha256})")
    return 0


def part_path(out: Path) -> Path:
    return out.with_name(out.name + ".part")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _receive(stub: Any, checkpoint_id: str, part: Path, bar: Any) -> Download | None:
    """Append the chunks from the size of ``part`` on; what the server said about the file
    (None if it sent no chunk)."""
    from services.generated.star.v1 import service_pb2

    offset, download = _size(part), None
    call = stub.FetchCheckpoint(
        service_pb2.FetchCheckpointRequest(checkpoint_id=checkpoint_id, offset=offset)
    )
    try:
        with part.open("ab") as file:
            for chunk in call:
                announced = Download(chunk.total_size, chunk.sha256)
                if chunk.offset != offset or download not in (None, announced):
                    raise ClientError(
                        f"{checkpoint_id}: the server sent a chunk at byte"
                        f" {chunk.offset} (expected {offset}) or changed the"
                        " file's size or sha256 mid-download",
                        SERVER_ERROR_EXIT,
                    )
                download = announced
                file.write(chunk.data)
                offset += len(chunk.data)
                bar.total = download.total_size
                bar.update(len(chunk.data))
            file.flush()
            os.fsync(file.fileno())
    finally:
        call.cancel()
    return download


def _verify_and_rename(part: Path, out: Path, download: Download, checkpoint_id: str) -> None:
    size = _size(part)
    with part.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if (size, digest) != download:
        part.unlink()
        raise ClientError(
            f"{checkpoint_id}: got {size} bytes with sha256 {digest}, the server"
            f" announced {download.total_size} bytes with sha256"
            f" {download.sha256}; deleted {part}, run again",
            SERVER_ERROR_EXIT,
        )
    os.replace(part, out)
    directory = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _download(
    stub: Any, checkpoint_id: str, part: Path, bar: Any, sleep: Callable[[float], None]
) -> Download:
    """Receive until the server sent the whole file; restart from 0 once if ``part`` does not
    fit it; reopen after transient errors (FETCH_ATTEMPTS in a row without progress)."""
    import grpc

    from services.cli.client import is_transient

    failures, restarted = 0, False
    while True:
        before = _size(part)
        try:
            download = _receive(stub, checkpoint_id, part, bar)
            if download is not None and _size(part) >= download.total_size:
                return download
            problem = "the stream ended early" if download is not None else "no chunk"
        except grpc.RpcError as err:
            if not (is_transient(err) or (err.code().name == "INVALID_ARGUMENT" and before)):
                raise
            problem = f"{err.code().name}: {' '.join((err.details() or '').split())}"
        if problem.startswith(("no chunk", "INVALID_ARGUMENT")) and before and not restarted:
            logger.warning(
                "%s does not fit %s (%s); downloading it again", part, checkpoint_id, problem
            )
            part.unlink()
            bar.reset()
            restarted = True
            continue
        failures = 0 if _size(part) > before else failures + 1
        if failures > FETCH_ATTEMPTS or problem == "no chunk":
            raise ClientError(
                f"{checkpoint_id}: download failed at byte {_size(part)}: {problem}"
                f" (run again to resume from {part})",
                SERVER_ERROR_EXIT,
            )
        sleep(RETRY_BACKOFF_S * 2 ** max(failures - 1, 0))


def fetch_checkpoint(
    stub: Any, checkpoint_id: str, out: Path, sleep: Callable[[float], None] = time.sleep
) -> Download:
    """Download checkpoint ``checkpoint_id`` to ``out`` (see the module docstring)."""
    from tqdm import tqdm

    part = part_path(out)
    with tqdm(
        initial=_size(part),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=checkpoint_id,
        disable=None,
    ) as bar:
        download = _download(stub, checkpoint_id, part, bar, sleep)
    _verify_and_rename(part, out, download, checkpoint_id)
    return download
