"""``star fetch CHECKPOINT_ID --out FILE``: download a checkpoint, resumably, and verify it.

The download is ``StarClient.fetch``: chunks go to ``FILE.part``; a cut download is continued
from the size of ``FILE.part``, by the command itself after a transient error, or by running the
command again. After the last chunk the SHA-256 of the whole file is compared with the one the
server sent, and ``FILE.part`` is renamed to ``FILE`` in one step, so ``FILE`` is never
half-written. A mismatch deletes ``FILE.part`` and fails (exit 1; run the command again to
download afresh). A ``FILE.part`` that does not fit the checkpoint (longer than it, or already
complete) is downloaded again from the start. A progress bar shows the bytes received.

``--out`` naming an existing directory writes ``DIR/CHECKPOINT_ID.safetensors``. Load the file
with ``star_core.load_optimizer``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.client import add_connection_flags, connect
from services.client import Fetched, StarClient
from services.client.client import CHECKPOINT_SUFFIX


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
    with connect(args) as client:
        fetched = fetch_checkpoint(client, args.checkpoint_id, args.out)
    print(f"wrote {fetched.path} ({fetched.size_bytes} bytes, sha256 {fetched.sha256})")
    return 0


def fetch_checkpoint(client: StarClient, checkpoint_id: str, out: Path) -> Fetched:
    """``client.fetch`` with a progress bar of the bytes received (when stderr is a terminal)."""
    from tqdm import tqdm

    with tqdm(
        unit="B", unit_scale=True, unit_divisor=1024, desc=checkpoint_id, disable=None
    ) as bar:

        def progress(received: int, total: int) -> None:
            bar.total, bar.n = total, received
            bar.refresh()

        return client.fetch(checkpoint_id, out, progress)
