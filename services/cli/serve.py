"""``star serve``: run the STAR service (gRPC API + job manager + scheduler) until stopped.

With no ``--ray-address`` it starts a local Ray instance (token authentication on, dashboard on
loopback) and keeps its records in SQLite and its checkpoints under ``--data-dir``: the
embedded default. With ``--ray-address`` it joins an existing cluster. SIGTERM or Ctrl-C stops
it cleanly: running jobs checkpoint and resume when it starts again on the same data directory.

One service per data directory and per port: a second ``star serve`` on a data directory in use
(its lock, ``services.exclusive``) or on a port in use exits with 2 and one line that names
the directory and the holder's pid, or the address.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

DEFAULT_PORT = 50051
# Exit code of a start refused because the data directory or the port is taken.
IN_USE_EXIT = 2
DEFAULT_DATA_DIR = Path("star-data")
TOKEN_ENV = "STAR_TOKEN"


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="run the meta-training service")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0: any)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="SQLite records and checkpoints (default ./star-data)",
    )
    parser.add_argument("--ray-address", help="join this Ray cluster (default: start one)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token clients must send (env {TOKEN_ENV})",
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (turns TLS on)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--max-jobs", type=int, default=100, help="active jobs at most (more: RESOURCE_EXHAUSTED)"
    )
    parser.add_argument(
        "--max-running",
        type=int,
        default=4,
        help="jobs running at once (the others wait in PENDING)",
    )
    parser.add_argument(
        "--max-fetch-streams",
        type=int,
        default=32,
        help="FetchCheckpoint downloads open at once (more: RESOURCE_EXHAUSTED; default 32)",
    )
    parser.add_argument(
        "--max-schedules",
        type=int,
        default=100,
        help="schedules at most (more: RESOURCE_EXHAUSTED; default 100)",
    )
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        help="where the local Ray dashboard listens (default loopback)",
    )
    parser.add_argument("--dashboard-port", type=int, help="port of the local Ray dashboard")
    parser.set_defaults(handler=run_serve)


def options_from_args(args: argparse.Namespace):
    from services.app import ServiceOptions

    for flag, value in (
        ("--max-jobs", args.max_jobs),
        ("--max-running", args.max_running),
        ("--max-fetch-streams", args.max_fetch_streams),
        ("--max-schedules", args.max_schedules),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"TLS file not found: {path}")
    if args.data_dir.exists() and not args.data_dir.is_dir():
        raise NotADirectoryError(f"--data-dir {args.data_dir} exists and is not a directory")
    return ServiceOptions(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        ray_address=args.ray_address,
        token=args.token or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_jobs=args.max_jobs,
        max_running=args.max_running,
        max_fetch_streams=args.max_fetch_streams,
        max_schedules=args.max_schedules,
        num_cpus=args.num_cpus,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
    )


def describe(service) -> list[str]:
    """What a person needs to reach the service."""
    options = service.options
    lines = [
        f"STAR API on {options.host}:{service.port} (gRPC star.v1.MetaTraining; "
        f"token {'on' if options.token else 'off'}, TLS "
        f"{'on' if options.tls_cert else 'off'})",
        f"  data:      {Path(options.data_dir).resolve()}",
    ]
    ray = service.ray
    if ray.dashboard_url:
        note = f" (Ray token in {ray.token_path})" if ray.token_path else ""
        lines.append(f"  dashboard: {ray.dashboard_url}{note}")
    lines.append(f"  Ray:       {ray.address}{' (local)' if ray.started_here else ''}")
    return lines


async def serve(options, ready=None) -> None:
    """Run the service until SIGTERM/SIGINT; ``ready(service)`` is called once it serves."""
    from services.app import StarService

    service = StarService(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await service.start()
        # After start: ray.init installs its own SIGTERM handler (which aborts the process).
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(service)
        await stop.wait()
    finally:
        await service.stop()


def run_serve(args: argparse.Namespace) -> int:
    options = options_from_args(args)

    def ready(service) -> None:
        print("\n".join(describe(service)), flush=True)

    from services.exclusive import AddressInUse, DataDirectoryInUse

    try:
        asyncio.run(serve(options, ready))
    except (DataDirectoryInUse, AddressInUse) as err:  # another service holds them
        print(f"star: error: {err}", file=sys.stderr)
        return IN_USE_EXIT
    except (OSError, RuntimeError, ConnectionError) as err:  # Ray or the port refused us
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"star: error: the service stopped: {type(err).__name__}: {first}", file=sys.stderr)
        return 1
    print("star serve: stopped", flush=True)
    return 0
