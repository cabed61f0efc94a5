"""Fixtures of the plugins' unit tests: a migrated storage with two profiles, and a
cache environment for each kind of fake service."""

import pytest
import pytest_twisted

from libervia.backend.memory.storage import Storage
from tests.unit.plugins.cache_env import Env
from tests.unit.plugins.fake_pubsub import KINDS, FakePubsubService


@pytest_twisted.async_yield_fixture
async def storage(db_url):
    storage = Storage(db_url)
    await storage.start()
    await storage.migrate()
    for name in ("alice", "bob"):
        await storage.profiles.create_profile(name)
    yield storage
    await storage.stop()


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def env(storage, kind):
    return Env(storage, FakePubsubService(kind))


@pytest.fixture
def log_lines():
    """``log_lines()``: every line logged since the test started, with the message of
    the failure a line carries."""
    from twisted.logger import formatEvent, globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(e) + (f" {e['log_failure'].getErrorMessage()}"
                                     if e.get("log_failure") else "") for e in events]
    globalLogPublisher.removeObserver(events.append)
