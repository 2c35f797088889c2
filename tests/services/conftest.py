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
