"""``storage.roster`` on SQLite and PostgreSQL: rosters, versions, pending requests."""

import pytest
import pytest_twisted

from libervia.backend.core.exceptions import NotFound
from libervia.backend.memory.storage import RosterEntry

BOB = RosterEntry("bob@example.org", "Bob ☕", "both", False, ("Friends", "Tëam"))
CAROL = RosterEntry("carol@example.org", None, "none", True, ())


@pytest_twisted.ensureDeferred
async def test_a_full_roster_replaces_the_stored_one_with_its_version(storage, profile):
    roster = storage.roster
    assert (await roster.get_roster(profile)).known is False
    await roster.replace_roster(profile, "v1", [BOB, CAROL])
    stored = await roster.get_roster(profile)
    assert (stored.version, stored.items, stored.known) == ("v1", [BOB, CAROL], True)
    await roster.replace_roster(profile, None, [CAROL])
    stored = await roster.get_roster(profile)
    assert (stored.version, stored.items) == (None, [CAROL])
    # an empty roster is a known one
    await roster.replace_roster(profile, "v3", [])
    stored = await roster.get_roster(profile)
    assert (stored.version, stored.items, stored.known) == ("v3", [], True)


@pytest_twisted.ensureDeferred
async def test_pushes_change_one_item_and_move_the_version(storage, profile):
    roster = storage.roster
    await roster.replace_roster(profile, "v1", [BOB])
    assert await roster.apply_push(profile, "v2", CAROL) is True
    changed = RosterEntry("bob@example.org", "Robert", "to", False, ())
    assert await roster.apply_push(profile, "v3", changed) is True
    stored = await roster.get_roster(profile)
    assert (stored.version, stored.items) == ("v3", [changed, CAROL])
    assert await roster.apply_push(profile, "v4", None, "carol@example.org") is True
    assert await roster.apply_push(profile, "v5", None, "nobody@example.org") is False
    # no version: the stored one stays
    assert await roster.apply_push(profile, None, None, "bob@example.org") is True
    stored = await roster.get_roster(profile)
    assert (stored.version, stored.items) == ("v5", [])


@pytest_twisted.ensureDeferred
async def test_pending_requests_are_kept_bounded_and_forgotten(storage, profile):
    roster = storage.roster
    assert await roster.add_pending(profile, "a@example.org", "hello", 2) is True
    assert await roster.add_pending(profile, "b@example.org", None, 2) is True
    assert await roster.add_pending(profile, "c@example.org", None, 2) is False
    # asking again replaces the request, even at the bound
    assert await roster.add_pending(profile, "a@example.org", "again", 2) is True
    pending = await roster.get_pending(profile)
    assert [(r.jid, r.status) for r in pending] == [("b@example.org", None),
                                                    ("a@example.org", "again")]
    assert pending[0].to_dict()["received"].endswith("+00:00")
    assert await roster.del_pending(profile, "a@example.org") is True
    assert await roster.del_pending(profile, "a@example.org") is False
    assert [r.jid for r in await roster.get_pending(profile)] == ["b@example.org"]


@pytest_twisted.ensureDeferred
async def test_a_deleted_profile_takes_its_roster_and_requests_along(storage, profile):
    await storage.roster.replace_roster(profile, "v1", [BOB])
    await storage.roster.add_pending(profile, "a@example.org", None, 5)
    await storage.profiles.delete_profile(profile)
    await storage.profiles.create_profile(profile)
    assert (await storage.roster.get_roster(profile)).items == []
    assert await storage.roster.get_pending(profile) == []


@pytest.mark.parametrize("call", [
    lambda r: r.get_roster("nobody"),
    lambda r: r.replace_roster("nobody", "v1", []),
    lambda r: r.apply_push("nobody", "v1", BOB),
    lambda r: r.get_pending("nobody"),
    lambda r: r.add_pending("nobody", "a@example.org", None, 5),
    lambda r: r.del_pending("nobody", "a@example.org"),
])
@pytest_twisted.ensureDeferred
async def test_an_unknown_profile_is_not_found(storage, call):
    with pytest.raises(NotFound):
        await call(storage.roster)
