"""Fixtures of the storage tests: a started, migrated Storage on each engine."""

import pytest_twisted

from libervia.backend.memory.sqla import Storage


@pytest_twisted.async_yield_fixture
async def storage(db_url):
    """A started Storage at the head revision, on each engine in turn."""
    storage = Storage(db_url)
    await storage.start()
    await storage.migrate()
    try:
        yield storage
    finally:
        await storage.stop()


@pytest_twisted.async_yield_fixture
async def profile(storage):
    """Name of a profile created in ``storage``."""
    await storage.create_profile("alice")
    yield "alice"
