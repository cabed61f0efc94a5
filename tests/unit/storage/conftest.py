"""Fixtures of the storage tests: started, migrated Storages on each engine."""

import pytest_twisted

from libervia.backend.memory.storage import Storage


@pytest_twisted.async_yield_fixture
async def make_storage():
    """Factory ``await make_storage(url, **kwargs)`` of started Storages at head.

    Each is stopped after the test.
    """
    started = []

    async def make(url, **kwargs):
        storage = Storage(url, **kwargs)
        await storage.start()
        started.append(storage)
        await storage.migrate()
        return storage

    yield make
    for storage in started:
        await storage.stop()


@pytest_twisted.async_yield_fixture
async def storage(make_storage, db_url):
    """A started Storage at the head revision, on each engine in turn."""
    yield await make_storage(db_url)


@pytest_twisted.async_yield_fixture
async def profile(storage):
    """Name of a profile created in ``storage``."""
    await storage.profiles.create_profile("alice")
    yield "alice"
