"""Fixtures of the service tests: a Store on a real SQLite file with a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.store import Store


class FakeClock:
    """A clock that starts at 2030-01-01 UTC and moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    store = Store(tmp_path / "star.db", clock=clock)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance for every test of the session that needs Ray.

    Token authentication with a token file of the session's own, set up as the service sets up
    its local instance (``runtime.connect``): without a configured token, Ray 2.60's ``ray.init``
    writes a new one into ``~/.ray/auth_token``, which every later ``ray start --head`` on the
    machine then demands (and worker nodes started without it fail with InvalidAuthToken).
    """
    import ray

    from services.cluster import runtime

    token_path = runtime.ensure_token(tmp_path_factory.mktemp("ray") / "auth_token")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(runtime.AUTH_MODE_ENV, "token")
        env.setenv(runtime.AUTH_TOKEN_PATH_ENV, str(token_path))
        runtime._reload_ray_config()  # Ray, imported while collecting, read the mode then
        # As the embedded default's local instance: 2 CPUs for workers, a home for learners.
        ray.init(
            num_cpus=2,
            resources={runtime.LEARNER_RESOURCE: runtime.LOCAL_LEARNER_SLOTS},
            include_dashboard=False,
            namespace="star",
            logging_level="WARNING",
        )
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def running_service(ray_session, tmp_path_factory):
    """A StarService (gRPC on loopback, SQLite, checkpoints) over the session's Ray."""
    from services.app import BackgroundService, ServiceOptions

    data_dir = tmp_path_factory.mktemp("star-data")
    service = BackgroundService(ServiceOptions(data_dir=data_dir, port=0, max_running=4))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def client(running_service):
    """A ``StarClient`` connected to the running service."""
    from services.client import StarClient

    with StarClient(running_service.address) as client:
        yield client
