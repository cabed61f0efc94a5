"""The Storage API, on SQLite and on PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError

from libervia.backend.core.exceptions import ConflictError, NotFound
from libervia.backend.memory.sqla_mapping import Profile, PubsubItem, SyncState
from libervia.backend.memory.storage import ItemsPage, OrderBy, StorageError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SERVICE = "pubsub.example.org"


def item(i, **extra):
    return {"name": f"i{i}", "data": f"<item id='i{i}'><p>{i}</p></item>", **extra}


async def node_with_items(storage, profile, count=10, name="blog"):
    """A node whose items i0..i{count-1} were created one second apart."""
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, name)
    await storage.pubsub.cache_pubsub_items(
        node.id,
        [item(i, created=T0 + timedelta(seconds=i), parsed={"n": i}) for i in range(count)],
    )
    return node


def names(items):
    return [i.name for i in items]


async def reference_page(storage, node_id, max_items=None, item_ids=None, before=None,
                         after=None, index=None, order_by="creation", desc=False):
    """The page ``get_items`` must give, cut in Python from the whole ordered set."""
    def thd_all(session):
        key = PubsubItem.created if order_by == "creation" else PubsubItem.updated
        query = select(PubsubItem).where(PubsubItem.node_id == node_id).order_by(
            *(col.desc() if desc else col.asc() for col in (key, PubsubItem.id)))
        if item_ids is not None:
            query = query.where(PubsubItem.name.in_(item_ids))
        return list(session.scalars(query))

    whole = await storage.runner.run_in_session("whole", thd_all, write=False)
    ids = names(whole)
    if after is not None:
        start = ids.index(after) + 1
    elif before == "":
        start = len(whole) - min(len(whole), len(whole) if max_items is None else max_items)
    elif before is not None:
        end = ids.index(before)
        start = 0 if max_items is None else max(0, end - max_items)
        whole = whole[:end]
    else:
        start = index or 0
    items = whole[start:] if max_items is None else whole[start:start + max_items]
    count = len(ids)
    if not items:
        return items, ItemsPage(None, None, None, count)
    return items, ItemsPage(items[0].name, items[-1].name, start, count)


# profiles


@pytest_twisted.ensureDeferred
async def test_profiles_are_created_listed_and_deleted(storage):
    alice = await storage.profiles.create_profile("alice")
    bob = await storage.profiles.create_profile("bob")
    assert await storage.profiles.get_profiles() == {"alice": alice, "bob": bob}
    await storage.profiles.delete_profile("alice")
    assert await storage.profiles.get_profiles() == {"bob": bob}


@pytest_twisted.ensureDeferred
async def test_creating_an_existing_profile_is_a_conflict(storage, profile):
    with pytest.raises(ConflictError, match="alice"):
        await storage.profiles.create_profile(profile)
    assert list(await storage.profiles.get_profiles()) == ["alice"]


@pytest_twisted.ensureDeferred
async def test_deleting_an_unknown_profile_is_not_found(storage):
    with pytest.raises(NotFound, match="nobody"):
        await storage.profiles.delete_profile("nobody")


@pytest_twisted.ensureDeferred
async def test_deleting_a_profile_deletes_its_data(storage, profile):
    await storage.profiles.set_param("General", "nick", "Al", profile=profile)
    await storage.profiles.set_private_value("ns", "key", [1], profile=profile)
    node = await node_with_items(storage, profile, count=3)
    await storage.profiles.delete_profile(profile)
    await storage.profiles.create_profile(profile)
    assert await storage.profiles.get_params(profile=profile) == {}
    assert await storage.profiles.get_privates("ns", profile=profile) == {}
    assert await storage.pubsub.get_pubsub_nodes() == []
    items, page = await storage.pubsub.get_items(node.id)
    assert (items, page.count) == ([], 0)


# parameters


@pytest_twisted.ensureDeferred
async def test_general_and_profile_params_are_separate(storage, profile):
    await storage.profiles.set_param("Connection", "port", "5222")
    await storage.profiles.set_param("Connection", "port", "5223", profile=profile)
    await storage.profiles.set_param("Misc", "theme", "dark", profile=profile)
    assert await storage.profiles.get_param("Connection", "port") == "5222"
    assert await storage.profiles.get_param("Connection", "port", profile) == "5223"
    assert await storage.profiles.get_params() == {("Connection", "port"): "5222"}
    assert await storage.profiles.get_params(profile=profile) == {
        ("Connection", "port"): "5223", ("Misc", "theme"): "dark",
    }
    assert await storage.profiles.get_params(profile=profile, category="Misc") == {
        ("Misc", "theme"): "dark",
    }


@pytest_twisted.ensureDeferred
async def test_setting_a_param_replaces_its_value_and_delete_removes_it(storage):
    await storage.profiles.set_param("C", "n", "1")
    await storage.profiles.set_param("C", "n", "2")
    assert await storage.profiles.get_param("C", "n") == "2"
    assert await storage.profiles.delete_param("C", "n") is True
    assert await storage.profiles.delete_param("C", "n") is False
    assert await storage.profiles.get_param("C", "n") is None


@pytest_twisted.ensureDeferred
async def test_concurrent_writes_of_one_key_all_succeed(storage, profile):
    from twisted.internet import defer

    values = [str(i) for i in range(40)]
    await defer.gatherResults(
        [storage.profiles.set_param("C", "same", v, profile=profile) for v in values]
        + [storage.profiles.set_private_value("ns", "same", v) for v in values]
    )
    assert await storage.profiles.get_param("C", "same", profile) in values
    assert (await storage.profiles.get_privates("ns"))["same"] in values


@pytest_twisted.ensureDeferred
async def test_params_of_an_unknown_profile_are_not_found(storage):
    with pytest.raises(NotFound, match="ghost"):
        await storage.profiles.set_param("C", "n", "1", profile="ghost")


# private values


@pytest_twisted.ensureDeferred
async def test_private_values_round_trip_as_json(storage, profile):
    value = {"list": [1, 2.5, None, True], "text": "é€", "nested": {"a": {}}}
    await storage.profiles.set_private_value("plugin", "doc", value)
    await storage.profiles.set_private_value("plugin", "text", "just a string",
                                             profile=profile)
    assert await storage.profiles.get_privates("plugin") == {"doc": value}
    assert await storage.profiles.get_privates("plugin", profile=profile) == {
        "text": "just a string"}


@pytest_twisted.ensureDeferred
async def test_binary_private_values_are_bytes_in_their_own_space(storage, profile):
    blob = bytes(range(256))
    await storage.profiles.set_private_value("keys", "k", blob, binary=True, profile=profile)
    await storage.profiles.set_private_value("keys", "k", "text", profile=profile)
    assert await storage.profiles.get_privates("keys", binary=True, profile=profile) == {"k": blob}
    assert await storage.profiles.get_privates("keys", profile=profile) == {"k": "text"}


@pytest_twisted.ensureDeferred
async def test_private_values_are_refused_when_not_serialisable(storage):
    with pytest.raises(TypeError, match="JSON"):
        await storage.profiles.set_private_value("ns", "k", object())
    with pytest.raises(TypeError, match="bytes"):
        await storage.profiles.set_private_value("ns", "k", "text", binary=True)


@pytest_twisted.ensureDeferred
async def test_private_values_can_be_selected_and_deleted(storage):
    for key in "abc":
        await storage.profiles.set_private_value("ns", key, key.upper())
    await storage.profiles.set_private_value("other", "a", 1)
    assert await storage.profiles.get_privates("ns", ["a", "c", "z"]) == {"a": "A", "c": "C"}
    assert await storage.profiles.del_private_value("ns", "a") is True
    assert await storage.profiles.del_private_value("ns", "a") is False
    assert await storage.profiles.del_private_namespace("ns") == 2
    assert await storage.profiles.get_privates("ns") == {}
    assert await storage.profiles.get_privates("other") == {"a": 1}


# pubsub nodes


@pytest_twisted.ensureDeferred
async def test_set_pubsub_node_creates_then_updates_the_same_node(storage, profile):
    created = await storage.pubsub.set_pubsub_node(
        profile, SERVICE, "blog", analyser="mb", type_="blog", extra={"k": [1]}
    )
    assert (created.analyser, created.type_, created.subscribed) == ("mb", "blog", False)
    assert created.sync_state is None and created.sync_items_done == 0
    updated = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog", subscribed=True)
    assert updated.id == created.id
    assert (updated.analyser, updated.subscribed, updated.extra) == ("mb", True, {"k": [1]})
    fetched = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert (fetched.id, fetched.subscribed) == (created.id, True)
    assert await storage.pubsub.get_pubsub_node(profile, SERVICE, "other") is None


@pytest_twisted.ensureDeferred
async def test_set_pubsub_node_refuses_unknown_fields(storage, profile):
    with pytest.raises(TypeError, match="colour"):
        await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog", colour="red")


@pytest_twisted.ensureDeferred
async def test_concurrent_set_pubsub_node_calls_make_one_node(storage, profile):
    from twisted.internet import defer

    nodes = await defer.gatherResults([
        storage.pubsub.set_pubsub_node(profile, SERVICE, "race", subtype=str(i)) for i in range(20)
    ])
    assert len({n.id for n in nodes}) == 1
    assert len(await storage.pubsub.get_pubsub_nodes(profile)) == 1


@pytest_twisted.ensureDeferred
async def test_sync_state_and_progress_are_recorded_with_a_time(storage, profile):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    before = datetime.now(UTC) - timedelta(seconds=1)
    await storage.pubsub.update_pubsub_node_sync_state(
        node.id, SyncState.IN_PROGRESS, items_done=0, items_expected=42
    )
    await storage.pubsub.cache_pubsub_items(node.id, [item(1), item(2)], count_progress=True)
    node = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert node.sync_state is SyncState.IN_PROGRESS
    assert (node.sync_items_done, node.sync_items_expected) == (2, 42)
    assert node.sync_state_updated >= before and node.sync_state_updated.tzinfo is not None
    await storage.pubsub.update_pubsub_node_sync_state(node.id, SyncState.COMPLETED)
    in_progress = await storage.pubsub.get_pubsub_nodes(sync_states=[SyncState.IN_PROGRESS])
    completed = await storage.pubsub.get_pubsub_nodes(sync_states=[SyncState.COMPLETED])
    assert in_progress == [] and [n.id for n in completed] == [node.id]
    with pytest.raises(NotFound):
        await storage.pubsub.update_pubsub_node_sync_state(node.id + 1000, SyncState.ERROR)


@pytest_twisted.ensureDeferred
async def test_nodes_are_filtered_by_profile_service_and_state(storage, profile):
    await storage.profiles.create_profile("bob")
    a = await storage.pubsub.set_pubsub_node(profile, SERVICE, "a")
    b = await storage.pubsub.set_pubsub_node(profile, "other.example", "b",
                                             sync_state=SyncState.ERROR)
    c = await storage.pubsub.set_pubsub_node("bob", SERVICE, "a")
    ids = lambda nodes: [n.id for n in nodes]  # noqa: E731
    assert ids(await storage.pubsub.get_pubsub_nodes()) == [a.id, b.id, c.id]
    assert ids(await storage.pubsub.get_pubsub_nodes(profile)) == [a.id, b.id]
    assert ids(await storage.pubsub.get_pubsub_nodes(service=SERVICE)) == [a.id, c.id]
    assert ids(await storage.pubsub.get_pubsub_nodes(sync_states=[None])) == [a.id, c.id]
    assert ids(await storage.pubsub.get_pubsub_nodes(
        sync_states=[None, SyncState.ERROR], profile="bob")) == [c.id]


def node_columns(node):
    return {c: getattr(node, c) for c in ("id", "profile_id", "service", "name",
                                          "subscribed", "analyser", "type_", "subtype",
                                          "sync_state", "sync_state_updated",
                                          "sync_items_done", "sync_items_expected",
                                          "extra")}


def node_reads(storage):
    stats = storage.timings.get("get_pubsub_node")
    return stats.calls if stats else 0


@pytest_twisted.ensureDeferred
async def test_a_node_read_again_is_given_from_memory_each_caller_its_own(
        storage, profile):
    await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog", analyser="mb",
                                         sync_state=SyncState.COMPLETED,
                                         extra={"traits": {"rsm": True}})
    read = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert await storage.pubsub.get_pubsub_node(profile, SERVICE, "unknown") is None
    reads = node_reads(storage)
    again = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert await storage.pubsub.get_pubsub_node(profile, SERVICE, "unknown") is None
    assert node_reads(storage) == reads, "the database was asked again"
    assert again is not read and node_columns(again) == node_columns(read)
    # a copy behaves as a node read from the database: detached, relationships unloaded
    with pytest.raises(InvalidRequestError):
        again.profile  # noqa: B018
    # what a caller changes in its copy is its own
    again.extra["traits"]["rsm"] = False
    again.analyser = "changed"
    third = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert node_columns(third) == node_columns(read)


@pytest_twisted.ensureDeferred
async def test_a_node_in_memory_is_forgotten_as_soon_as_a_write_is_queued(
        storage, profile):
    created = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog", analyser="a")
    await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    # queued, not awaited: a read made meanwhile goes to the database
    writing = storage.pubsub.set_pubsub_node(profile, SERVICE, "blog", analyser="b")
    reads = node_reads(storage)
    await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert node_reads(storage) == reads + 1
    await writing
    assert (await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")).analyser == "b"
    # every kind of write counts, those deleting the node through another table too
    await storage.pubsub.update_pubsub_node_sync_state(created.id, SyncState.ERROR)
    node = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert node.sync_state is SyncState.ERROR
    await storage.profiles.delete_profile(profile)
    with pytest.raises(NotFound):
        await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")


@pytest_twisted.ensureDeferred
async def test_deleting_nodes_deletes_their_items(storage, profile):
    blog = await node_with_items(storage, profile, count=3)
    other = await node_with_items(storage, profile, count=2, name="other")
    assert await storage.pubsub.delete_pubsub_nodes(profiles=[profile], names=["blog"]) == 1
    assert (await storage.pubsub.get_items(blog.id))[1].count == 0
    assert (await storage.pubsub.get_items(other.id))[1].count == 2
    assert await storage.pubsub.delete_pubsub_nodes(services=["elsewhere"]) == 0


@pytest_twisted.ensureDeferred
async def test_returned_objects_are_readable_after_their_session_closed(storage, profile):
    node = await node_with_items(storage, profile, count=1)
    items, __ = await storage.pubsub.get_items(node.id, details=True)
    # every column was loaded in the thread; nothing is left to load lazily
    assert (items[0].name, items[0].parsed, items[0].node_id) == ("i0", {"n": 0}, node.id)
    assert items[0].created == T0
    # relationships are never loaded behind the caller's back
    node = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    with pytest.raises(InvalidRequestError):
        node.profile  # noqa: B018


@pytest_twisted.ensureDeferred
async def test_details_of_items_not_read_raise_instead_of_being_none(storage, profile):
    node = await node_with_items(storage, profile, count=1)
    (plain,), __ = await storage.pubsub.get_items(node.id)
    assert (plain.name, plain.data, plain.node_id) == ("i0", item(0)["data"], node.id)
    for name in ("parsed", "created", "updated"):
        with pytest.raises(AttributeError, match="details=True"):
            getattr(plain, name)


# pubsub items


@pytest_twisted.ensureDeferred
async def test_caching_an_existing_item_updates_it_but_keeps_its_creation(storage, profile):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    await storage.pubsub.cache_pubsub_items(node.id, [item(1, created=T0, parsed={"v": 1})])
    later = T0 + timedelta(hours=1)
    written = await storage.pubsub.cache_pubsub_items(node.id, [
        {"name": "i1", "data": "<item id='i1'>v2</item>", "parsed": {"v": 2},
         "created": later, "updated": later},
    ])
    assert written == 1
    (cached,), page = await storage.pubsub.get_items(node.id, details=True)
    assert page.count == 1
    assert (cached.data, cached.parsed) == ("<item id='i1'>v2</item>", {"v": 2})
    assert (cached.created, cached.updated) == (T0, later)


@pytest_twisted.ensureDeferred
async def test_items_are_cached_in_batches_and_the_last_duplicate_wins(storage, profile):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    items = [item(i) for i in range(25)] + [{"name": "i3", "data": "<item id='i3'/>"}]
    assert await storage.pubsub.cache_pubsub_items(node.id, items, batch_size=7) == 25
    assert storage.timings["cache_pubsub_items"].calls == 4
    cached, page = await storage.pubsub.get_items(node.id, item_ids=["i3"])
    assert page.count == 1 and cached[0].data == "<item id='i3'/>"


@pytest_twisted.ensureDeferred
async def test_invalid_items_are_refused_before_anything_is_written(storage, profile):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    with pytest.raises(ValueError, match="invalid item"):
        await storage.pubsub.cache_pubsub_items(node.id, [item(1), {"name": "i2"}])
    with pytest.raises(ValueError, match="string of XML"):
        await storage.pubsub.cache_pubsub_items(node.id, [{"name": "i3", "data": b"<x/>"}])
    assert (await storage.pubsub.get_items(node.id))[1].count == 0


@pytest_twisted.ensureDeferred
async def test_items_are_deleted_by_id_or_all(storage, profile):
    node = await node_with_items(storage, profile, count=5)
    assert await storage.pubsub.delete_pubsub_items(node.id, ["i1", "i3", "nope"]) == 2
    assert names((await storage.pubsub.get_items(node.id))[0]) == ["i0", "i2", "i4"]
    assert await storage.pubsub.delete_pubsub_items(node.id) == 3
    assert (await storage.pubsub.get_items(node.id))[1].count == 0


@pytest_twisted.ensureDeferred
async def test_purge_deletes_only_matching_items(storage, profile):
    await storage.profiles.create_profile("bob")
    blog = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog", type_="blog")
    events = await storage.pubsub.set_pubsub_node(profile, SERVICE, "events", type_="event")
    bobs = await storage.pubsub.set_pubsub_node("bob", SERVICE, "blog", type_="blog")
    for node in (blog, events, bobs):
        await storage.pubsub.cache_pubsub_items(node.id, [
            item(i, created=T0 + timedelta(days=i), updated=T0 + timedelta(days=i))
            for i in range(4)
        ])
    assert await storage.pubsub.purge_pubsub_items(types=["event"]) == 4
    assert await storage.pubsub.purge_pubsub_items(
        profiles=["bob"], created_before=T0 + timedelta(days=2)) == 2
    assert await storage.pubsub.purge_pubsub_items(
        names=["blog"], updated_before=T0 + timedelta(days=1)) == 1
    counts = [(await storage.pubsub.get_items(n.id))[1].count for n in (blog, events, bobs)]
    assert counts == [3, 0, 2]
    assert await storage.pubsub.purge_pubsub_items() == 5


@pytest_twisted.ensureDeferred
async def test_replacing_items_swaps_them_all_and_completes_the_sync(storage, profile):
    node = await node_with_items(storage, profile, count=5)
    await storage.pubsub.update_pubsub_node_sync_state(node.id, SyncState.IN_PROGRESS)
    written = await storage.pubsub.replace_pubsub_items(
        node.id, [item(3), item(7)], sync_state=SyncState.COMPLETED)
    assert written == 2
    items, page = await storage.pubsub.get_items(node.id)
    assert sorted(names(items)) == ["i3", "i7"] and page.count == 2
    node = await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")
    assert node.sync_state is SyncState.COMPLETED
    assert (node.sync_items_done, node.sync_items_expected) == (2, 2)


@pytest.mark.parametrize("order", ["creation", "modification"])
@pytest_twisted.ensureDeferred
async def test_replacing_items_keeps_their_times_and_the_order_given(storage, profile,
                                                                     order):
    node = await node_with_items(storage, profile, count=3)
    seen = T0 + timedelta(hours=1)
    before, __ = await storage.pubsub.get_items(node.id, details=True)
    kept = {i.name: (i.created, i.updated) for i in before}
    # the service's order: i0 and i2 unchanged, i1 changed (a service ordering by
    # modification moved it after i2), then three new items: one without dates, one
    # dated before the items it follows, one dated (naive: UTC)
    early = T0 - timedelta(days=1)
    edited = item(1, data="<item id='i1'><p>edited</p></item>")
    await storage.pubsub.replace_pubsub_items(node.id, [
        *([item(0), edited, item(2)] if order == "creation"
          else [item(0), item(2), edited]),
        {"name": "new", "data": "<new/>"},
        {"name": "backdated", "data": "<b/>", "created": early},
        {"name": "dated", "data": "<d/>",
         "created": (seen + timedelta(minutes=1)).replace(tzinfo=None),
         "updated": seen + timedelta(minutes=2)},
    ], seen=seen, order=order)
    after, __ = await storage.pubsub.get_items(node.id, details=True, order_by=order)
    times = {i.name: (i.created, i.updated) for i in after}
    assert times["i0"] == kept["i0"] and times["i2"] == kept["i2"]
    assert times["i1"] == (kept["i1"][0], seen)
    assert times["new"] == (seen, seen)
    # dated before the item the service gives before it: raised to that one's time
    assert times["backdated"] == ((seen, seen) if order == "creation" else (early, seen))
    assert times["dated"] == (seen + timedelta(minutes=1), seen + timedelta(minutes=2))
    # the service's order, ties (equal times) included, whichever way it is read
    expected = ["i0", "i1", "i2", "new", "backdated", "dated"]
    if order == "modification":
        expected = ["i0", "i2", "i1", "new", "backdated", "dated"]
    assert names(after) == expected
    reverse, __ = await storage.pubsub.get_items(node.id, order_by=order, desc=True)
    assert names(reverse) == expected[::-1]
    with pytest.raises(ValueError, match="must be datetimes"):
        await storage.pubsub.replace_pubsub_items(node.id, [
            {"name": "x", "data": "<x/>", "created": "2024-01-01"}])


@pytest_twisted.ensureDeferred
async def test_failed_replacement_keeps_the_old_items(storage, profile):
    from libervia.backend.memory.storage.pubsub import _item_rows, thd_replace_items

    node = await node_with_items(storage, profile, count=3)

    def thd_replace_then_fail(session):
        thd_replace_items(session, storage.db_engine, node.id,
                          _item_rows(node.id, [item(9)], dated=False), SyncState.COMPLETED,
                          T0, "created")
        raise RuntimeError("the connection broke")

    with pytest.raises(RuntimeError):
        await storage.runner.run_in_session("replace_then_fail", thd_replace_then_fail)
    with pytest.raises(ValueError, match="invalid item"):
        await storage.pubsub.replace_pubsub_items(node.id, [{"name": "x"}])
    items, __ = await storage.pubsub.get_items(node.id)
    assert names(items) == ["i0", "i1", "i2"]
    assert (await storage.pubsub.get_pubsub_node(profile, SERVICE, "blog")).sync_state is None


@pytest_twisted.ensureDeferred
async def test_cache_stats_count_nodes_by_state_items_and_bytes(storage, profile):
    await storage.profiles.create_profile("bob")
    blog = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog",
                                                sync_state=SyncState.COMPLETED)
    await storage.pubsub.set_pubsub_node(profile, SERVICE, "other")
    bobs = await storage.pubsub.set_pubsub_node("bob", SERVICE, "blog")
    await storage.pubsub.cache_pubsub_items(blog.id, [
        {"name": "a", "data": "<é/>"}, {"name": "b", "data": "<b/>"}])
    await storage.pubsub.cache_pubsub_items(bobs.id, [{"name": "c", "data": "<c/>"}])
    assert await storage.pubsub.get_cache_stats(profile) == {
        "nodes": {"COMPLETED": 1, "none": 1}, "items": 2, "bytes": 5 + 4,
    }
    assert (await storage.pubsub.get_cache_stats())["items"] == 3
    assert await storage.pubsub.get_cache_stats("bob") == {
        "nodes": {"none": 1}, "items": 1, "bytes": 4}


# full-text search


async def blog_posts(storage, profile, node="blog", posts=None):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, node, type_="blog")
    posts = posts or {
        "p1": "Cooking pasta with fresh tomatoes",
        "p2": "Tomatoes, tomatoes everywhere: a tomatoes festival",
        "p3": "Fixing a bicycle",
    }
    await storage.pubsub.cache_pubsub_items(node.id, [
        {"name": name, "data": f"<entry><title>{text}</title></entry>"}
        for name, text in posts.items()
    ])
    return node


def found_names(result):
    return [hit.item_id for hit in result.items]


def search(storage, text, **filters):
    """Full-text search of ``text`` (and node filters) through storage.search."""
    return storage.search.search_items({"fts": text, **filters})


@pytest_twisted.ensureDeferred
async def test_search_finds_items_holding_every_word_best_first(storage, profile):
    await blog_posts(storage, profile)
    results = await search(storage, "TOMATOES")
    # the post saying it three times ranks first
    assert found_names(results) == ["p2", "p1"]
    assert results.items[0].rank > results.items[1].rank
    assert found_names(await search(storage, "fresh tomatoes")) == ["p1"]
    assert found_names(await search(storage, "tomatoes bicycle")) == []
    assert found_names(await search(storage, "tomatoes", limit=1, index=1)) == ["p1"]


@pytest_twisted.ensureDeferred
async def test_search_is_filtered_by_nodes_and_profiles(storage, profile):
    await storage.profiles.create_profile("bob")
    mine = await blog_posts(storage, profile)
    await blog_posts(storage, "bob", posts={"b1": "Tomatoes from Bob"})
    await blog_posts(storage, profile, node="events", posts={"e1": "Tomatoes party"})
    assert found_names(await search(storage, "tomatoes", profiles=["bob"])) == ["b1"]
    assert sorted(found_names(await search(
        storage, "tomatoes", profiles=[profile], nodes=["blog"]))) == ["p1", "p2"]
    assert found_names(await search(storage, "party", profiles=[profile],
                                    services=[mine.service], nodes=[mine.name])) == []
    assert found_names(await search(
        storage, "party", types=["blog"], services=[SERVICE])) == ["e1"]


@pytest_twisted.ensureDeferred
async def test_search_index_follows_updates_deletions_and_node_removal(storage, profile):
    node = await blog_posts(storage, profile)
    await storage.pubsub.cache_pubsub_items(node.id, [
        {"name": "p3", "data": "<entry><title>Fixing a tandem</title></entry>"}])
    assert found_names(await search(storage, "bicycle")) == []
    assert found_names(await search(storage, "tandem")) == ["p3"]
    await storage.pubsub.delete_pubsub_items(node.id, ["p2"])
    assert found_names(await search(storage, "tomatoes")) == ["p1"]
    await storage.pubsub.replace_pubsub_items(node.id, [
        {"name": "n1", "data": "<entry><title>New tomatoes</title></entry>"}])
    assert found_names(await search(storage, "tomatoes")) == ["n1"]
    await storage.pubsub.delete_pubsub_nodes(names=["blog"])
    assert found_names(await search(storage, "tomatoes")) == []


@pytest.mark.parametrize("text", [
    'tomatoes"', "NEAR(tomatoes", "title:tomatoes", "tomatoes*", "'; DROP TABLE x; --",
    "-tomatoes", "tomatoes AND OR NOT",
])
@pytest_twisted.ensureDeferred
async def test_search_syntax_characters_are_plain_text(storage, profile, text):
    await blog_posts(storage, profile)
    results = await search(storage, text)
    assert set(found_names(results)) <= {"p1", "p2"}
    assert (await storage.profiles.get_profiles()) == {profile: 1}


@pytest_twisted.ensureDeferred
async def test_empty_search_is_refused(storage):
    with pytest.raises(ValueError, match="at least one word"):
        await search(storage, "   ")


# paging (RSM semantics)


@pytest_twisted.ensureDeferred
async def test_items_come_oldest_first_and_max_items_limits_them(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id)
    assert names(items) == [f"i{i}" for i in range(10)]
    assert page == ItemsPage("i0", "i9", 0, 10)
    items, page = await storage.pubsub.get_items(node.id, max_items=3)
    assert names(items) == ["i0", "i1", "i2"] and page == ItemsPage("i0", "i2", 0, 10)


@pytest_twisted.ensureDeferred
async def test_desc_returns_newest_first(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id, max_items=2, desc=True)
    assert names(items) == ["i9", "i8"] and page == ItemsPage("i9", "i8", 0, 10)


@pytest_twisted.ensureDeferred
async def test_after_returns_the_following_page_with_its_index(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id, max_items=3, after="i2")
    assert names(items) == ["i3", "i4", "i5"] and page == ItemsPage("i3", "i5", 3, 10)
    items, page = await storage.pubsub.get_items(node.id, max_items=3, after="i8")
    assert names(items) == ["i9"] and page == ItemsPage("i9", "i9", 9, 10)
    items, page = await storage.pubsub.get_items(node.id, max_items=3, after="i9")
    assert items == [] and page == ItemsPage(None, None, None, 10)


@pytest_twisted.ensureDeferred
async def test_before_returns_the_preceding_page_in_order(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id, max_items=3, before="i5")
    assert names(items) == ["i2", "i3", "i4"] and page == ItemsPage("i2", "i4", 2, 10)
    items, page = await storage.pubsub.get_items(node.id, max_items=3, before="i1")
    assert names(items) == ["i0"] and page == ItemsPage("i0", "i0", 0, 10)


@pytest_twisted.ensureDeferred
async def test_empty_before_returns_the_last_page(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id, max_items=4, before="")
    assert names(items) == ["i6", "i7", "i8", "i9"] and page == ItemsPage("i6", "i9", 6, 10)
    items, page = await storage.pubsub.get_items(node.id, max_items=2, before="", desc=True)
    assert names(items) == ["i1", "i0"] and page == ItemsPage("i1", "i0", 8, 10)


@pytest_twisted.ensureDeferred
async def test_paging_with_desc_follows_the_descending_order(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id, max_items=3, after="i7", desc=True)
    assert names(items) == ["i6", "i5", "i4"] and page.index == 3
    items, page = await storage.pubsub.get_items(node.id, max_items=3, before="i2", desc=True)
    assert names(items) == ["i5", "i4", "i3"] and page.index == 4


@pytest_twisted.ensureDeferred
async def test_index_starts_the_page_at_a_position(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id, max_items=2, index=4)
    assert names(items) == ["i4", "i5"] and page == ItemsPage("i4", "i5", 4, 10)
    items, page = await storage.pubsub.get_items(node.id, max_items=2, index=10)
    assert items == [] and page == ItemsPage(None, None, None, 10)


@pytest_twisted.ensureDeferred
async def test_walking_every_page_returns_every_item_once(storage, profile):
    node = await node_with_items(storage, profile, count=23)
    seen, after = [], None
    while True:
        items, page = await storage.pubsub.get_items(node.id, max_items=5, after=after)
        if not items:
            break
        assert page.index == len(seen)
        seen += names(items)
        after = page.last
    assert seen == [f"i{i}" for i in range(23)]


@pytest_twisted.ensureDeferred
async def test_item_ids_restrict_the_set_and_the_count(storage, profile):
    node = await node_with_items(storage, profile)
    items, page = await storage.pubsub.get_items(node.id, item_ids=["i7", "i2", "i5", "nope"])
    assert names(items) == ["i2", "i5", "i7"] and page == ItemsPage("i2", "i7", 0, 3)
    items, page = await storage.pubsub.get_items(
        node.id, item_ids=["i7", "i2", "i5"], max_items=1, after="i2")
    assert names(items) == ["i5"] and page == ItemsPage("i5", "i5", 1, 3)


@pytest_twisted.ensureDeferred
async def test_order_by_modification_uses_the_update_time(storage, profile):
    node = await node_with_items(storage, profile, count=4)
    # i1 is modified last: it moves to the end in modification order only
    await storage.pubsub.cache_pubsub_items(node.id, [
        item(1, updated=T0 + timedelta(hours=1)),
    ])
    by_creation, __ = await storage.pubsub.get_items(node.id)
    by_update, __ = await storage.pubsub.get_items(node.id, order_by=OrderBy.MODIFICATION)
    assert names(by_creation) == ["i0", "i1", "i2", "i3"]
    assert names(by_update) == ["i0", "i2", "i3", "i1"]
    after, page = await storage.pubsub.get_items(node.id, order_by="modification", after="i2")
    assert names(after) == ["i3", "i1"] and page.index == 2


@pytest_twisted.ensureDeferred
async def test_items_created_at_the_same_time_keep_a_stable_order(storage, profile):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    await storage.pubsub.cache_pubsub_items(node.id, [item(i, created=T0) for i in range(6)])
    first, page = await storage.pubsub.get_items(node.id, max_items=3)
    rest, __ = await storage.pubsub.get_items(node.id, max_items=3, after=page.last)
    assert sorted(names(first) + names(rest)) == [f"i{i}" for i in range(6)]
    assert not set(names(first)) & set(names(rest))


@pytest.mark.parametrize("kwargs", [
    {}, {"max_items": 3}, {"max_items": 4, "before": ""}, {"before": ""},
    {"max_items": 2, "before": "", "desc": True}, {"max_items": 2, "index": 4},
    {"index": 7}, {"max_items": 2, "index": 10}, {"max_items": 0},
    {"max_items": 3, "desc": True, "order_by": "modification"},
    {"max_items": 3, "after": "i2"}, {"max_items": 3, "before": "i5"},
    {"item_ids": ["i7", "i2"], "max_items": 1},
])
@pytest_twisted.ensureDeferred
async def test_pages_are_the_slices_of_the_whole_ordered_set(storage, profile, kwargs):
    node = await node_with_items(storage, profile)
    # updated in another order than created: the two orders differ
    await storage.pubsub.cache_pubsub_items(node.id, [
        item(i, updated=T0 + timedelta(seconds=20 - i)) for i in range(0, 10, 3)])
    full, full_page = await reference_page(storage, node.id, **kwargs)
    items, page = await storage.pubsub.get_items(node.id, **kwargs)
    assert page == full_page
    assert [(i.name, i.data) for i in items] == [(i.name, i.data) for i in full]


@pytest_twisted.ensureDeferred
async def test_counts_of_pages_follow_every_write(storage, profile):
    node = await node_with_items(storage, profile, count=5)

    async def count():
        # twice: the second answer may come from the remembered count
        counts = [(await storage.pubsub.get_items(node.id, max_items=2, before=""))[1].count
                  for __ in range(3)]
        assert len(set(counts)) == 1, counts
        return counts[0]

    assert await count() == 5
    await storage.pubsub.cache_pubsub_items(node.id, [item(9)])
    assert await count() == 6
    await storage.pubsub.delete_pubsub_items(node.id, ["i0", "i1"])
    assert await count() == 4
    await storage.pubsub.replace_pubsub_items(node.id, [item(i) for i in range(8)])
    assert await count() == 8
    await storage.pubsub.purge_pubsub_items(names=["blog"])
    assert await count() == 0


@pytest_twisted.ensureDeferred
async def test_a_remembered_count_is_not_used_when_a_write_came_during_the_read(
        storage, profile, monkeypatch):
    node = await node_with_items(storage, profile, count=5)
    counts = storage.pubsub._item_counts
    # a count remembered before a write that the read then notices
    epoch, __ = counts.get(node.id)
    counts.remember(epoch, node.id, 99)
    monkeypatch.setattr(counts, "unchanged", lambda epoch: False)
    items, page = await storage.pubsub.get_items(node.id, max_items=2, before="")
    assert names(items) == ["i3", "i4"] and page == ItemsPage("i3", "i4", 3, 5)


@pytest_twisted.ensureDeferred
async def test_unknown_anchor_is_not_found(storage, profile):
    node = await node_with_items(storage, profile, count=3)
    with pytest.raises(NotFound, match="nope"):
        await storage.pubsub.get_items(node.id, after="nope")
    with pytest.raises(NotFound):
        await storage.pubsub.get_items(node.id, before="i1", item_ids=["i0", "i2"])


@pytest.mark.parametrize("kwargs, message", [
    ({"after": "a", "before": "b"}, "only one"),
    ({"index": 1, "after": "a"}, "only one"),
    ({"max_items": -1}, "negative"),
    ({"index": -2}, "negative"),
    ({"order_by": "size"}, "unknown order"),
])
@pytest_twisted.ensureDeferred
async def test_invalid_paging_requests_are_refused(storage, profile, kwargs, message):
    node = await storage.pubsub.set_pubsub_node(profile, SERVICE, "blog")
    with pytest.raises(ValueError, match=message):
        await storage.pubsub.get_items(node.id, **kwargs)


# calls


@pytest_twisted.ensureDeferred
async def test_sqlalchemy_results_never_cross_to_the_reactor_thread(storage):
    def thd_leaky(session):
        return session.execute(select(Profile))

    with pytest.raises(TypeError, match="plain values"):
        await storage.runner.run_in_session("leaky", thd_leaky)


@pytest_twisted.ensureDeferred
async def test_custom_queries_run_in_a_session_or_a_connection(storage, profile):
    def thd_count(session):
        return session.scalar(select(Profile.name))

    def thd_items(conn):
        return conn.execute(select(PubsubItem.name)).scalars().all()

    assert await storage.runner.run_in_session("count", thd_count, write=False) == profile
    assert await storage.runner.run_in_connection("items", thd_items, write=False) == []


@pytest_twisted.ensureDeferred
async def test_calls_are_refused_once_the_storage_stopped(storage):
    await storage.stop()
    with pytest.raises(StorageError, match="not running"):
        await storage.profiles.get_profiles()
