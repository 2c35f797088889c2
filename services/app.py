"""``StarService``: the whole service in one process (what ``star serve`` runs).

Wiring, in dependency order::

    Ray (runtime.connect)  ->  Store (SQLite, <data-dir>/star.db)  +  CheckpointStore
        ->  JobManager (recovers interrupted jobs, dispatches, cancels)  ->  Scheduler (cron)
        ->  MetaTrainingServicer  ->  gRPC server (auth, TLS, health, reflection)

Data directory layout::

    <data-dir>/star.lock          held (flock) by the one service that uses the directory
    <data-dir>/star.db            jobs, events, checkpoint index, schedules (SQLite, WAL)
    <data-dir>/checkpoints/       one folder of checkpoint files per job
    <data-dir>/ray/auth_token     the token of the local Ray instance (embedded default only)

``start()`` first takes the data directory's lock (``services.exclusive``: a second service on
the same directory stops at once with DataDirectoryInUse, before it could requeue and run the
first one's jobs) and checks that the port is free (AddressInUse), then connects to Ray (before
JAX is imported by anything), opens the store, sweeps the checkpoint folder of what an
interrupted write left (``CheckpointStore.sweep``), recovers the jobs a previous process left
running, and serves. ``stop()`` reports NOT_SERVING, asks every running job to checkpoint (they
resume on the next start), stops the server and, for the embedded default, the local Ray
instance, and releases the lock last.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DB_FILE = "star.db"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass(frozen=True)
class ServiceOptions:
    """What ``star serve`` is told (its flags)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051
    ray_address: str | None = None
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_jobs: int = 100
    max_running: int = 4
    num_cpus: int | None = None  # CPUs of a local Ray instance (None: all)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int | None = None
    run_scheduler: bool = True
    max_fetch_streams: int = 32  # FetchCheckpoint streams open at once
    max_schedules: int = 100  # schedules at most
    # Not flags; for programs that embed the service. worker_class: the training workers' actor
    # class (None: services.cluster.worker.WorkerActor; benchmarks/cluster_scaling.py plugs in
    # a stand-in estimator). runner_factory(job): the runner of each job (None: the real ones;
    # tests of the API and the store under load use stand-ins, and then need no Ray: connect_ray
    # False).
    worker_class: type | None = None
    runner_factory: Any = None
    connect_ray: bool = True


class StarService:
    """See the module docstring."""

    def __init__(self, options: ServiceOptions):
        self.options = options
        self.ray: Any = None
        self.store: Any = None
        self.manager: Any = None
        self.scheduler: Any = None
        self.server: Any = None
        self.servicer: Any = None
        self.lock: Any = None
        self._scheduler_task: Any = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        host = self.options.host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    async def start(self) -> None:
        from services.exclusive import DataDirectoryLock, check_address

        options = self.options
        data_dir = Path(options.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirectoryLock(data_dir).acquire()  # before any heavy import
        check_address(options.host, options.port)

        from services.cluster import runtime

        if options.connect_ray:
            self.ray = runtime.connect(
                options.ray_address,
                data_dir,
                num_cpus=options.num_cpus,
                dashboard_host=options.dashboard_host,
                dashboard_port=options.dashboard_port,
            )
        await self._start_components(data_dir)

    async def _start_components(self, data_dir: Path) -> None:
        import asyncio

        from services.api.server import build_server
        from services.api.servicer import MetaTrainingServicer
        from services.manager import JobManager
        from services.store import CheckpointStore, Store

        options = self.options
        self.store = Store(data_dir / DB_FILE)
        checkpoints = CheckpointStore(data_dir / CHECKPOINT_DIR)
        await asyncio.to_thread(checkpoints.sweep, self.store.checkpoint_file_names())
        self.manager = JobManager(
            self.store,
            checkpoints,
            max_jobs=options.max_jobs,
            max_running=options.max_running,
            worker_class=options.worker_class,
            runner_factory=options.runner_factory,
        )
        await self.manager.start()
        if options.run_scheduler:
            from services.schedule import Scheduler

            self.scheduler = Scheduler(
                self.store, self.manager, max_schedules=options.max_schedules
            )
            self._scheduler_task = asyncio.create_task(self.scheduler.run(), name="star-cron")
        self.servicer = MetaTrainingServicer(
            self.store,
            checkpoints,
            self.manager,
            self.scheduler,
            max_fetch_streams=options.max_fetch_streams,
        )
        self.server = await build_server(
            self.servicer,
            options.host,
            options.port,
            options.token,
            options.tls_cert,
            options.tls_key,
        )

    async def stop(self) -> None:
        """Stop serving; running jobs checkpoint and resume on the next start. (Imports only
        what started: a start refused at the lock stops at once.)"""
        try:
            if self.server is not None:
                await self.server.health.enter_graceful_shutdown()
            if self.scheduler is not None:
                self.scheduler.stop()
            if self.manager is not None:
                await self.manager.shutdown()
            if self.server is not None:
                from services.api.server import stop_server

                await stop_server(self.server)
            if self.store is not None:
                self.store.close()
            if self.ray is not None:
                from services.cluster import runtime

                runtime.disconnect(self.ray)
        finally:
            if self.lock is not None:
                self.lock.release()


class BackgroundService:
    """A :class:`StarService` on its own event loop in a background thread, for programs that
    are not asyncio themselves (``star demo``, the tests): ``start()``, ``address``, ``stop()``."""

    def __init__(self, options: ServiceOptions):
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="star-service", daemon=True
        )
        self.service = StarService(options)

    def call(self, coroutine: Any, timeout: float = 300.0) -> Any:
        """Run ``coroutine`` on the service's loop and wait for its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> BackgroundService:
        self.thread.start()
        try:
            self.call(self.service.start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the service (jobs checkpoint) and its loop."""
        try:
            self.call(self.service.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)

    @property
    def address(self) -> str:
        return self.service.address
