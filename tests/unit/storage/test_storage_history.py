"""``storage.history`` on SQLite and PostgreSQL: messages stored once (the database's
unique constraints refuse a second copy), pages by time with uid cursors, full-text
search of the bodies."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from libervia.backend.core.exceptions import NotFound
from libervia.backend.memory.sqla_mapping import HistoryEntry
from libervia.backend.memory.storage import HistoryFilter, HistoryMessage

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"


def message(n: int, contact: str = BOB, direction: str = "in", **changes) -> HistoryMessage:
    """The ``n``-th message of a conversation with ``contact``, a minute apart."""
    incoming = direction == "in"
    base = HistoryMessage(
        uid=str(uuid.uuid4()), source=contact if incoming else ALICE,
        source_resource="phone" if incoming else "libervia",
        dest=ALICE if incoming else contact, dest_resource=None, conversation=contact,
        timestamp=T0 + timedelta(minutes=n), received=T0 + timedelta(minutes=n, seconds=1),
        type="chat", direction=direction, bodies={"": f"message number{n} ☕"},
        stanza_id=f"sid-{contact}-{n}", origin_id=f"oid-{n}", message_id=f"id-{n}")
    return replace(base, **changes)


@pytest_twisted.ensureDeferred
async def test_a_message_is_stored_with_everything_it_said(storage, profile):
    sent = message(1, direction="out", bodies={"": "hello", "fr": "bonjour"},
                   subjects={"en": "greetings"}, thread="t1", thread_parent="t0",
                   extra={"truncated": True}, stanza_id=None)
    result = await storage.history.add(profile, sent)
    assert result.stored is True
    stored = await storage.history.get(profile, sent.uid)
    assert stored == sent
    data = stored.to_dict()
    assert (data["from"], data["to"], data["with"]) == (
        f"{ALICE}/libervia", BOB, BOB)
    assert (data["body"], data["subject"]) == ("hello", "greetings")
    assert data["timestamp"] == (T0 + timedelta(minutes=1)).isoformat()
    with pytest.raises(NotFound):
        await storage.history.get(profile, "no-such-uid")


@pytest_twisted.ensureDeferred
async def test_the_same_stanza_id_is_stored_once(storage, profile):
    first = message(1)
    assert (await storage.history.add(profile, first)).stored is True
    # the same message again (another uid, as a second arrival gets): refused
    again = replace(first, uid=str(uuid.uuid4()), origin_id=None)
    result = await storage.history.add(profile, again)
    assert (result.stored, result.message.uid) == (False, first.uid)
    page = await storage.history.get_history(profile, HistoryFilter())
    assert [m.uid for m in page.messages] == [first.uid]


@pytest_twisted.ensureDeferred
async def test_an_own_message_is_stored_once_by_origin_id_and_gets_its_stanza_id(
        storage, profile):
    # sent live (the server's stanza-id is not known yet), then seen again with it
    sent = message(1, direction="out", stanza_id=None)
    await storage.history.add(profile, sent)
    archived = replace(sent, uid=str(uuid.uuid4()), stanza_id="archive-1",
                       source_resource="other-device")
    result = await storage.history.add(profile, archived)
    assert result.stored is False
    assert (result.message.uid, result.message.stanza_id) == (sent.uid, "archive-1")
    assert (await storage.history.get(profile, sent.uid)).stanza_id == "archive-1"


@pytest_twisted.ensureDeferred
async def test_an_origin_id_counts_for_its_sender_only(storage, profile):
    # a contact reusing another's origin-id does not shadow the other's message
    await storage.history.add(profile, message(1, BOB, stanza_id=None, origin_id="x"))
    result = await storage.history.add(profile, message(2, CAROL, stanza_id=None,
                                                        origin_id="x"))
    assert result.stored is True
    # and messages without any id are all kept
    for n in (3, 4):
        assert (await storage.history.add(profile, message(
            n, stanza_id=None, origin_id=None))).stored is True
    page = await storage.history.get_history(profile, HistoryFilter())
    assert len(page.messages) == 4


@pytest_twisted.ensureDeferred
async def test_the_unique_constraints_hold_in_the_database_itself(storage, profile):
    first = message(1)
    await storage.history.add(profile, first)

    def insert(session, **changes):
        row = session.get(HistoryEntry, 1)
        values = {column.name: getattr(row, attr.key)
                  for attr in HistoryEntry.__mapper__.column_attrs
                  for column in attr.columns if column.name != "id"}
        values.update(uid=str(uuid.uuid4()), **changes)
        session.execute(sa.insert(HistoryEntry.__table__), values)

    for changes in ({"origin_id": "other"}, {"stanza_id": "other"}):
        with pytest.raises(IntegrityError):
            await storage.runner.run_in_session("test", insert, **changes)
    # different stanza-id and origin-id: a message of its own
    await storage.runner.run_in_session("test", insert, stanza_id="s2", origin_id="o2")


@pytest_twisted.ensureDeferred
async def test_pages_go_back_and_forth_with_uid_cursors(storage, profile):
    messages = [message(n, BOB if n % 2 else CAROL) for n in range(10)]
    # stored out of order: the order is the messages' time
    for m in reversed(messages):
        await storage.history.add(profile, m)
    history = storage.history
    page = await history.get_history(profile, HistoryFilter(limit=3))
    assert [m.uid for m in page.messages] == [m.uid for m in messages[9:6:-1]]
    assert page.more is True
    older = await history.get_history(profile, HistoryFilter(
        limit=3, before=page.messages[-1].uid))
    assert [m.uid for m in older.messages] == [m.uid for m in messages[6:3:-1]]
    newer = await history.get_history(profile, HistoryFilter(
        limit=10, after=messages[6].uid, order="asc"))
    assert [m.uid for m in newer.messages] == [m.uid for m in messages[7:]]
    assert newer.more is False
    with_bob = await history.get_history(profile, HistoryFilter(with_jid=BOB, limit=100))
    assert [m.uid for m in with_bob.messages] == [m.uid for m in messages[9::-2]]
    window = await history.get_history(profile, HistoryFilter(
        since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5), order="asc"))
    assert [m.uid for m in window.messages] == [m.uid for m in messages[2:5]]
    assert (await history.get_history(profile, HistoryFilter(types=("normal",)))
            ).messages == []
    with pytest.raises(NotFound):
        await history.get_history(profile, HistoryFilter(before="unknown"))
    with pytest.raises(NotFound):
        await history.get_history("nobody", HistoryFilter())


@pytest_twisted.ensureDeferred
async def test_same_time_messages_keep_a_total_order(storage, profile):
    same = [message(1, stanza_id=f"s{n}", origin_id=f"o{n}") for n in range(4)]
    for m in same:
        await storage.history.add(profile, m)
    seen = []
    cursor = None
    while True:
        page = await storage.history.get_history(profile, HistoryFilter(
            limit=1, after=cursor, order="asc"))
        if not page.messages:
            break
        seen.append(page.messages[0].uid)
        cursor = seen[-1]
    assert seen == [m.uid for m in same]


@pytest_twisted.ensureDeferred
async def test_bodies_are_searched_by_words_in_any_language(storage, profile):
    await storage.history.add(profile, message(1, bodies={"": "the cat sat"}))
    await storage.history.add(profile, message(2, bodies={"en": "a dog",
                                                         "fr": "un chat noir"}))
    await storage.history.add(profile, message(3, CAROL, bodies={"": "cat and dog"}))
    found = await storage.history.get_history(profile, HistoryFilter(words=("cat",)))
    assert [m.body for m in found.messages] == ["cat and dog", "the cat sat"]
    found = await storage.history.get_history(profile, HistoryFilter(
        words=("chat",), with_jid=BOB))
    assert [m.bodies for m in found.messages] == [{"en": "a dog", "fr": "un chat noir"}]
    # every word must be there; quotes and operators are words, not syntax
    found = await storage.history.get_history(profile, HistoryFilter(
        words=("cat", "dog")))
    assert [m.body for m in found.messages] == ["cat and dog"]
    for words in (('"', ), ("NEAR(", "*")):
        page = await storage.history.get_history(profile, HistoryFilter(words=words))
        assert page.messages == []
    page = await storage.history.get_history(profile, HistoryFilter(words=("cat:",)))
    assert len(page.messages) == 2


@pytest_twisted.ensureDeferred
async def test_a_deleted_profile_takes_its_history_along(storage, profile):
    await storage.history.add(profile, message(1))
    await storage.profiles.delete_profile(profile)
    await storage.profiles.create_profile(profile)
    assert (await storage.history.get_history(profile, HistoryFilter())).messages == []
