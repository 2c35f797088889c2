"""FetchCheckpoint throughput and SubmitJob latency of a running STAR service, with baselines.

Used by ``service_scaling.py`` (see its docstring); each function prints a Markdown table.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

MIB = 1 << 20


def make_stub(address: str):
    """(channel, MetaTraining stub) on ``address`` (plain text, no token)."""
    import grpc

    from services.generated.star.v1 import service_pb2_grpc

    channel = grpc.insecure_channel(address)
    return channel, service_pb2_grpc.MetaTrainingStub(channel)


# -- FetchCheckpoint ---------------------------------------------------------------------------


def add_checkpoint(service, stub, size_mib: int, spec):
    """A PENDING job of ``service`` with an indexed checkpoint of ``size_mib`` random MiB."""
    from services.app import CHECKPOINT_DIR
    from services.generated.star.v1 import service_pb2
    from services.store import CheckpointStore

    job = stub.SubmitJob(service_pb2.SubmitJobRequest(spec=spec))
    checkpoints = CheckpointStore(Path(service.service.options.data_dir) / CHECKPOINT_DIR)
    stored = checkpoints.write(job.job_id, 1, os.urandom(size_mib * MIB))
    record = service.service.store.add_checkpoint(job.job_id, 1, *stored)
    return record, checkpoints.path(record)


def measure_fetch(service, stub, spec, size_mib: int, repeats: int) -> None:
    """MiB/s of FetchCheckpoint of a ``size_mib`` file and of a plain read of that file, in
    ``repeats`` interleaved rounds after one warm-up of each (page cache, channel)."""
    from services.generated.star.v1 import service_pb2

    record, path = add_checkpoint(service, stub, size_mib, spec)
    request = service_pb2.FetchCheckpointRequest(checkpoint_id=record.checkpoint_id)

    def fetch() -> int:
        return sum(len(chunk.data) for chunk in stub.FetchCheckpoint(request, timeout=120))

    def read() -> int:
        with open(path, "rb") as handle:
            return sum(len(data) for data in iter(lambda: handle.read(MIB), b""))

    rates: dict[str, list[float]] = {"FetchCheckpoint (gRPC, loopback)": [], "local read": []}
    for fn in (fetch, read):
        fn()
    for _ in range(repeats):
        for name, fn in zip(rates, (fetch, read), strict=True):
            start = time.perf_counter()
            if fn() != record.size_bytes:
                raise RuntimeError(f"{name}: wrong number of bytes")
            rates[name].append(record.size_bytes / MIB / (time.perf_counter() - start))
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"| {size_mib} MiB checkpoint | MiB/s (median of {repeats}) | range |\n|---|---:|---|")
    for name, values in rates.items():
        print(f"| {name} | {med[name]:.0f} | {min(values):.0f}-{max(values):.0f} |")
    grpc_rate = med["FetchCheckpoint (gRPC, loopback)"]
    print(
        f"FetchCheckpoint / local read: {grpc_rate / med['local read']:.3f}; target >= 200 "
        f"MiB/s: {'met' if grpc_rate >= 200 else 'missed'}"
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
    """One client: its own channel, ``count`` x (SubmitJob, GetJob of that job), timed."""
    import grpc

    from services.generated.star.v1 import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.MetaTrainingStub(channel)
        grpc.channel_ready_future(channel).result(timeout=30)
        start.wait()
        for _ in range(count):
            begin = time.perf_counter()
            job = stub.SubmitJob(service_pb2.SubmitJobRequest(spec=spec), timeout=60)
            middle = time.perf_counter()
            stub.GetJob(service_pb2.GetJobRequest(job_id=job.job_id), timeout=60)
            end = time.perf_counter()
            out["SubmitJob"].append(middle - begin)
            out["GetJob"].append(end - middle)
            job_ids.append(job.job_id)


def measure_submit(address: str, spec, clients: int, submits: int) -> list[str]:
    """p50/p99 latency of SubmitJob and GetJob from ``clients`` threads, each with its own
    channel, started together, ``submits`` calls of each per client; the new job ids."""
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
