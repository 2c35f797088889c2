"""The real gRPC server of the service over a real Store and CheckpointStore, without Ray.

``build_server`` with the real ``MetaTrainingServicer`` runs on an asyncio loop in a background
thread; its store and checkpoint files are on disk. There is no job manager (the RPCs tested
with it never reach one) and the scheduler does not tick (its stand-in job submitter is never
called): the tests play the runner by writing the store, as a runner does.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from services.api.server import RunningServer, build_server, stop_server
from services.api.servicer import MetaTrainingServicer
from services.schedule import Scheduler
from services.store import CheckpointStore, Store


class LoopThread:
    """An asyncio loop in a daemon thread: ``call(coroutine)`` runs it there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


class ApiServer:
    """``store``, ``files``, ``servicer``, ``address``; ``serve(**kw)`` starts another server
    on the same servicer (a token, a fixed port)."""

    def __init__(self, data_dir: Path, **servicer_options: Any):
        self.loop = LoopThread()
        self.store = Store(data_dir / "star.db")
        self.files = CheckpointStore(data_dir / "checkpoints")
        self.scheduler = Scheduler(self.store, jobs=None, max_schedules=3)
        self.servicer = MetaTrainingServicer(
            self.store, self.files, None, self.scheduler, **servicer_options
        )
        self.servers: list[RunningServer] = []
        self.address = f"127.0.0.1:{self.serve().port}"

    def serve(self, **options: Any) -> RunningServer:
        running = self.loop.call(
            build_server(self.servicer, port=options.pop("port", 0), **options)
        )
        self.servers.append(running)
        return running

    def close(self) -> None:
        try:
            for running in self.servers:
                self.loop.call(stop_server(running, grace=0))
        finally:
            self.loop.close()
            self.store.close()
