"""``storage.caps``: verified entity capabilities, kept across restarts, and the
revision that added their table, upgraded with data on both engines."""

import pytest_twisted
import sqlalchemy as sa

from libervia.backend.memory.storage import Storage
from tests.unit.storage.migration_helpers import (
    connect,
    count_items,
    current_revision,
    insert_first_revision_data,
    migrate,
    revisions,
    table_names,
)

#: the revision adding disco_caps, and the one before it
CAPS_REVISION = "5b8e2d4f6a10"
BEFORE = revisions()[revisions().index(CAPS_REVISION) - 1]

SIMPLE_VER = "QgayPKawpkPSDYmwT/WM94uAlu0="
INFO = ("<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<identity category='client' type='pc' name='Exodus 0.9.1'/></query>")


@pytest_twisted.ensureDeferred
async def test_caps_are_kept_by_hash_and_survive_a_restart(storage, make_storage, db_url):
    assert await storage.caps.get_caps("sha-1", SIMPLE_VER) is None
    await storage.caps.set_caps("sha-1", SIMPLE_VER, INFO)
    # set again (two profiles verifying the same hash): no conflict, one row
    await storage.caps.set_caps("sha-1", SIMPLE_VER, INFO)
    assert await storage.caps.get_caps("sha-1", SIMPLE_VER) == INFO
    assert await storage.caps.get_caps("sha-256", SIMPLE_VER) is None
    await storage.stop()
    again = await make_storage(db_url)
    assert await again.caps.get_caps("sha-1", SIMPLE_VER) == INFO


@pytest_twisted.ensureDeferred
async def test_the_caps_revision_upgrades_a_database_with_data(db_url):
    migrate(db_url, revisions()[0])
    insert_first_revision_data(db_url)
    migrate(db_url, BEFORE)
    assert "disco_caps" not in table_names(db_url)
    migrate(db_url, CAPS_REVISION)
    assert "disco_caps" in table_names(db_url)
    assert count_items(db_url) == 5
    migrate(db_url, "head")
    storage = Storage(db_url)
    await storage.start()
    try:
        await storage.migrate()
        assert await storage.profiles.get_profiles() == {"alice": 1}
        await storage.caps.set_caps("sha-1", SIMPLE_VER, INFO)
        assert await storage.caps.get_caps("sha-1", SIMPLE_VER) == INFO
    finally:
        await storage.stop()
    migrate(db_url, BEFORE, downgrade=True)
    assert current_revision(db_url) == BEFORE
    assert "disco_caps" not in table_names(db_url)
    assert count_items(db_url) == 5
    sa_engine = connect(db_url)
    try:
        with sa_engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM profiles")) == 1
    finally:
        sa_engine.dispose()
