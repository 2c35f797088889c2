"""FetchCheckpoint throughput and SubmitJob latency of a running STAR service, with baselines.

Used by ``service_scaling.py`` (see its docstring); each function prints a Markdown table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

MIB = 1 << 20


# -- FetchCheckpoint ---------------------------------------------------------------------------


def add_checkpoint(service, client, size_mib: int, spec):
    """A PENDING job of ``service`` with an indexed checkpoint of ``size_mib`` random MiB."""
    from services.app import CHECKPOINT_DIR
    from services.store import CheckpointStore

    job = client.submit(spec)
    checkpoints = CheckpointStore(Path(service.service.options.data_dir) / CHECKPOINT_DIR)
    stored = checkpoints.write(job.job_id, 1, os.urandom(size_mib * MIB))
    record = service.service.store.add_checkpoint(job.job_id, 1, *stored)
    return record, checkpoints.path(record)


def measure_fetch(service, client, spec, size_mib: int, repeats: int) -> None:
    """MiB/s of ``StarClient.fetch`` of a ``size_mib`` file (to a file, sha256-checked) and of a
    local copy of that file with its sha256, in ``repeats`` interleaved rounds after one warm-up
    of each (page cache, channel)."""
    record, path = add_checkpoint(service, client, size_mib, spec)

    def fetch(out: Path) -> int:
        return client.fetch(record.checkpoint_id, out).path.stat().st_size

    def copy(out: Path) -> int:
        shutil.copyfile(path, out)
        with open(out, "rb") as handle:
            hashlib.file_digest(handle, "sha256")
        return out.stat().st_size

    rates: dict[str, list[float]] = {"StarClient.fetch (gRPC, loopback)": [], "local copy": []}
    with tempfile.TemporaryDirectory(prefix="star-fetch-") as folder:
        out = Path(folder) / "checkpoint.safetensors"
        for fn in (fetch, copy):
            fn(out)
            out.unlink()
        for _ in range(repeats):
            for name, fn in zip(rates, (fetch, copy), strict=True):
                start = time.perf_counter()
                if fn(out) != record.size_bytes:
                    raise RuntimeError(f"{name}: wrong number of bytes")
                rates[name].append(record.size_bytes / MIB / (time.perf_counter() - start))
                out.unlink()
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"| {size_mib} MiB checkpoint | MiB/s (median of {repeats}) | range |\n|---|---:|---|")
    for name, values in rates.items():
        print(f"| {name} | {med[name]:.0f} | {min(values):.0f}-{max(values):.0f} |")
    grpc_rate = med["StarClient.fetch (gRPC, loopback)"]
    print(
        f"StarClient.fetch / local copy: {grpc_rate / med['local copy']:.3f}; target >= 200 "
        f"MiB/s end to end (received, written, fsynced, sha256-checked): "
        f"{'met' if grpc_rate >= 200 else 'missed'}"
    )


# -- SubmitJob latency -------------------------------------------------------------------------


def client_thread(
    address: str,
    spec,
    count: int,
    start: threading.Barrier,
    out: dict[str, list[float]],
    job_ids: list[str],
) -> None:
    """One client: its own StarClient (channel), ``count`` x (SubmitJob, GetJob of that job),
    timed."""
    from services.client import StarClient

    with StarClient(address, timeout=60) as client:
        client.health(timeout=30, wait_for_ready=True)  # connected before the clock starts
        start.wait()
        for _ in range(count):
            begin = time.perf_counter()
            job = client.submit(spec)
            middle = time.perf_counter()
            client.get_job(job.job_id)
            end = time.perf_counter()
            out["SubmitJob"].append(middle - begin)
            out["GetJob"].append(end - middle)
            job_ids.append(job.job_id)


def measure_submit(address: str, spec, clients: int, submits: int) -> list[str]:
    """p50/p99 latency of SubmitJob and GetJob from ``clients`` threads, each with its own
    StarClient, started together, ``submits`` calls of each per client; the new job ids."""
    out: dict[str, list[float]] = {"SubmitJob": [], "GetJob": []}
    job_ids: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def client() -> None:
        try:
            client_thread(address, spec, submits, barrier, out, job_ids)
        except BaseException as err:
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed; first: {errors[0]!r}")
    print(f"| {clients} clients x {submits} | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|")
    for name, values in out.items():
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        print(f"| {name} | {cuts[49] * 1e3:.1f} | {cuts[98] * 1e3:.1f} | {max(values) * 1e3:.1f} |")
    print(
        f"{len(out['SubmitJob'])} submits in {wall:.1f} s: "
        f"{len(out['SubmitJob']) / wall:.0f} submits/s"
    )
    return job_ids
