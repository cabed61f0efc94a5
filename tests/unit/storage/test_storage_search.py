"""Search over cached items (Storage.search_items and the cache_search bridge method),
on SQLite and on PostgreSQL: every test runs on both and expects the same answer."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted

from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.memory.storage.search_query import (
    MAX_LIMIT,
    Condition,
    InvalidQuery,
    Order,
    SearchQuery,
    parse_path,
)
from libervia.backend.plugins.plugin_xep_0277 import parse_entry

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BLOG = "urn:xmpp:microblog:0"
SERVICE = "pubsub.example.org"
OTHER = "other.example.org"
EVIL = "x'); DROP TABLE pubsub_items; --"

#: node key: (service, node name, analyser, type, subtype)
NODES = {
    "blog": (SERVICE, BLOG, "XEP-0277", "blog", None),
    "events": (SERVICE, "events", "events", "event", "meeting"),
    "comments": (OTHER, BLOG + ":comments/x", "XEP-0277", "blog", "comments"),
}

#: item id: (node key, parsed, text of the item, created offset, updated offset)
ITEMS = {
    "p1": ("blog", {
        "title": "Tomatoes", "n": 1, "score": 2.5, "flag": True,
        "author": {"name": "Alice", "tags": ["a"]}, "categories": ["food", "garden"],
        "published": "2024-01-01T10:00:00+00:00", "nums": [1, 2],
        "links": [{"href": "https://a.example/1", "rel": "alternate"}],
    }, "tomatoes tomatoes tomatoes fresh", 0, 5),
    "p2": ("blog", {
        "title": "bicycle trip", "n": 10, "score": 0.5, "flag": False,
        "author": {"name": "Bob"}, "categories": ["travel"],
        "published": "2024-03-05T08:00:00+00:00", "nums": [3],
        "links": [{"href": "https://b.example/2", "rel": "replies"}],
    }, "a long bicycle trip", 1, 4),
    "p3": ("blog", {
        "title": "Garden news", "n": "10", "author": {"name": "alice"},
        "categories": [], "published": "2023-12-31T23:59:59+00:00", "maybe": None,
    }, "tomatoes grow in gardens", 2, 3),
    "p4": ("blog", {
        "title": "100% pure_fun", "n": 2, "author": None, "categories": ["food"],
        "published": None, "nums": ["1"], "links": [],
    }, "nothing special here", 3, 2),
    "e1": ("events", {
        "title": "Meeting", "n": 5, "score": 7, "author": {"name": "Alice"},
        "categories": ["work"], "published": "2024-06-01T09:00:00+00:00",
    }, "weekly meeting about tomatoes", 4, 1),
    "c1": ("comments", {"title": EVIL, "n": -3.5, "author": {"name": "Carol"}},
           "nice tomatoes indeed", 5, 0),
    "x1": ("blog", None, "unparsed item", 6, 6),
}
ALICE_ITEMS = sorted(ITEMS)


def xml(item_id, text):
    return f"<item id='{item_id}'><p>{text}</p></item>"


async def fill(storage, profile="alice", bob=True):
    """The items above, for ``profile``; bob gets a copy of p1 and e1."""
    await storage.profiles.create_profile(profile)
    nodes = {}
    for key, (service, name, analyser, type_, subtype) in NODES.items():
        nodes[key] = await storage.pubsub.set_pubsub_node(
            profile, service, name, analyser=analyser, type_=type_, subtype=subtype)
    for item_id, (key, parsed, text, created, updated) in ITEMS.items():
        await storage.pubsub.cache_pubsub_items(nodes[key].id, [{
            "name": item_id, "data": xml(item_id, text), "parsed": parsed,
            "created": T0 + timedelta(seconds=created),
            "updated": T0 + timedelta(seconds=10 + updated),
        }])
    if bob:
        await storage.profiles.create_profile("bob")
        for key in ("blog", "events"):
            service, name, analyser, type_, subtype = NODES[key]
            node = await storage.pubsub.set_pubsub_node("bob", service, name, analyser=analyser,
                                                        type_=type_, subtype=subtype)
            item_id = "p1" if key == "blog" else "e1"
            await storage.pubsub.cache_pubsub_items(node.id, [{
                "name": item_id, "data": xml(item_id, ITEMS[item_id][2]),
                "parsed": ITEMS[item_id][1]}])


async def found(storage, **query):
    """Ids of alice's items found, in the order given."""
    query.setdefault("profiles", ["alice"])
    result = await storage.search.search_items(query)
    assert all(hit.profile in query["profiles"] for hit in result.items)
    return [hit.item_id for hit in result.items]


async def found_set(storage, *conditions, **query):
    return sorted(await found(storage, conditions=list(conditions), **query))


# operators and types

OPERATOR_CASES = [
    # equality: only values of the operand's JSON type match ("10" is not 10)
    (("n", "==", 10), ["p2"]),
    (("n", "==", "10"), ["p3"]),
    (("n", "==", 10.0), ["p2"]),
    (("flag", "==", True), ["p1"]),
    (("flag", "==", False), ["p2"]),
    (("title", "==", "Tomatoes"), ["p1"]),
    (("title", "==", "tomatoes"), []),
    # null: the value is JSON null or missing
    (("maybe", "==", None), ALICE_ITEMS),
    (("author", "==", None), ["p4", "x1"]),
    (("author", "!=", None), ["c1", "e1", "p1", "p2", "p3"]),
    # != is the exact complement of ==: missing and other types included
    (("n", "!=", 10), ["c1", "e1", "p1", "p3", "p4", "x1"]),
    (("flag", "!=", True), ["c1", "e1", "p2", "p3", "p4", "x1"]),
    # numbers, integers and floats alike
    (("n", ">", 2), ["e1", "p2"]),
    (("n", ">=", 2), ["e1", "p2", "p4"]),
    (("n", "<", 2), ["c1", "p1"]),
    (("n", "<=", 2), ["c1", "p1", "p4"]),
    (("score", ">", 1), ["e1", "p1"]),
    (("score", "<", 2.5), ["p2"]),
    # strings, compared code point by code point (upper case before lower case)
    (("title", ">", "Tomatoes"), ["c1", "p2"]),
    (("title", "<", "Garden news"), ["p4"]),
    (("n", ">", "1"), ["p3"]),
    # dates as ISO 8601 strings in UTC
    (("published", ">=", "2024-01-01T00:00:00+00:00"), ["e1", "p1", "p2"]),
    (("published", "<", "2024"), ["p3"]),
    (("published", "between", ["2024-01-01", "2024-03-31"]), ["p1", "p2"]),
    (("n", "between", [1, 5]), ["e1", "p1", "p4"]),
    (("n", "between", [-4, 1.5]), ["c1", "p1"]),
    (("n", "in", [1, 10, 99]), ["p1", "p2"]),
    (("n", "in", ["10"]), ["p3"]),
    (("title", "in", ["Meeting", "Garden news", "nope"]), ["e1", "p3"]),
    (("n", "not_in", [1, 10]), ["c1", "e1", "p3", "p4", "x1"]),
    # arrays: overlap and disjoint, element types respected
    (("categories", "overlap", ["food", "work"]), ["e1", "p1", "p4"]),
    (("categories", "overlap", ["nothing"]), []),
    (("categories", "disjoint", ["food"]), ["c1", "e1", "p2", "p3", "x1"]),
    (("nums", "overlap", [1]), ["p1"]),
    (("nums", "overlap", ["1"]), ["p4"]),
    (("nums", "overlap", [3, 2]), ["p1", "p2"]),
    (("title", "overlap", ["Tomatoes"]), []),  # not an array
    (("author", "overlap", ["Alice"]), []),  # an object's values are not elements
    (("author", "disjoint", ["Alice"]), ["c1", "e1", "p1", "p2", "p3", "p4", "x1"]),
    # LIKE patterns: % any text, _ one character, \ escapes them
    (("title", "like", "%o%"), ["p1"]),
    (("title", "ilike", "%o%"), ["c1", "p1"]),
    (("title", "like", "T%"), ["p1"]),
    (("title", "like", "t%"), []),
    (("title", "ilike", "t%"), ["p1"]),
    (("title", "ilike", "%GARDEN%"), ["p3"]),
    (("title", "like", "100\\% pure\\_fun"), ["p4"]),
    (("title", "like", "100% pure_fun"), ["p4"]),
    (("title", "like", "1_0%"), ["p4"]),
    (("title", "like", "%[%"), []),
    (("title", "like", "%*%"), []),
    (("title", "like", "%\\\\%"), []),
    (("title", "like", "Tomato\\es"), ["p1"]),
    (("title", "ilike", "%\\_%"), ["c1", "p4"]),
    # nested objects and arrays
    (("author.name", "==", "Alice"), ["e1", "p1"]),
    ((["author", "name"], "ilike", "alice"), ["e1", "p1", "p3"]),
    (("author.tags[0]", "==", "a"), ["p1"]),
    (("links[0].href", "like", "https://b.%"), ["p2"]),
    ((["links", 0, "rel"], "==", "alternate"), ["p1"]),
    (("links[1].href", "==", None), ALICE_ITEMS),
    (("categories[1]", "==", "garden"), ["p1"]),
    # SQL in values is plain data
    (("title", "==", EVIL), ["c1"]),
    (("title", "like", "%DROP TABLE%"), ["c1"]),
    (("title", "in", [EVIL, "' OR 1=1 --"]), ["c1"]),
    (("title", "==", "' OR '1'='1"), []),
]


@pytest.mark.parametrize(("condition", "expected"), OPERATOR_CASES,
                         ids=[f"{c[0]} {c[1]} {c[2]!r}" for c, __ in OPERATOR_CASES])
@pytest_twisted.ensureDeferred
async def test_each_operator_matches_the_same_items_on_every_engine(
        storage, condition, expected):
    await fill(storage)
    assert await found_set(storage, condition) == sorted(expected)
    # the database is intact whatever the values held
    assert len(await found(storage, limit=MAX_LIMIT)) == len(ITEMS)


@pytest_twisted.ensureDeferred
async def test_conditions_and_node_filters_combine(storage):
    await fill(storage)
    assert await found_set(storage, ("author.name", "ilike", "alice"),
                           ("n", "<", 5)) == ["p1"]
    assert await found_set(storage, ("categories", "overlap", ["food", "work"]),
                           types=["blog"]) == ["p1", "p4"]
    assert await found_set(storage, types=["blog"], subtypes=["comments"]) == ["c1"]
    assert await found_set(storage, services=[OTHER]) == ["c1"]
    assert await found_set(storage, nodes=["events"]) == ["e1"]
    assert await found_set(storage, analysers=["events"]) == ["e1"]
    assert await found_set(storage, analysers=["XEP-0277"], nodes=[BLOG],
                           services=[SERVICE], fts="tomatoes") == ["p1", "p3"]
    assert await found_set(storage, ("n", ">", 0), fts="tomatoes") == ["e1", "p1"]
    assert await found_set(storage, types=["nothing"]) == []


# full text


@pytest_twisted.ensureDeferred
async def test_full_text_results_are_ranked_best_first(storage):
    await fill(storage)
    result = await storage.search.search_items({"profiles": ["alice"], "fts": "tomatoes",
                                         "types": ["blog"]})
    # p1 says it three times, p3 and c1 once, in texts of the same length
    ids = [hit.item_id for hit in result.items]
    assert ids[0] == "p1" and sorted(ids) == ["c1", "p1", "p3"]
    ranks = [hit.rank for hit in result.items]
    assert ranks[0] > ranks[1] >= ranks[2]
    ascending = await found(storage, fts="tomatoes", types=["blog"],
                            order=[["rank", "asc"]])
    assert ascending[-1] == "p1" and sorted(ascending) == sorted(ids)
    # every word must be there, in any case
    assert await found(storage, fts="TOMATOES fresh") == ["p1"]
    assert await found(storage, fts="tomatoes bicycle") == []
    # no rank without full text
    hits = (await storage.search.search_items({"profiles": ["alice"]})).items
    assert {hit.rank for hit in hits} == {None}


@pytest_twisted.ensureDeferred
async def test_full_text_query_syntax_is_plain_words(storage):
    await fill(storage)
    assert await found_set(storage, fts="tomatoes') --") == ["c1", "e1", "p1", "p3"]
    # OR is a word like any other, which no item holds
    assert await found(storage, fts="tomatoes OR bicycle") == []


# order


ORDER_CASES = [
    ("created", "asc", ["p1", "p2", "p3", "p4", "e1", "c1", "x1"]),
    ("created", "desc", ["x1", "c1", "e1", "p4", "p3", "p2", "p1"]),
    ("updated", "asc", ["c1", "e1", "p4", "p3", "p2", "p1", "x1"]),
    ("updated", "desc", ["x1", "p1", "p2", "p3", "p4", "e1", "c1"]),
    ("item_id", "asc", ["c1", "e1", "p1", "p2", "p3", "p4", "x1"]),
    ("item_id", "desc", ["x1", "p4", "p3", "p2", "p1", "e1", "c1"]),
]


@pytest.mark.parametrize(("key", "direction", "expected"), ORDER_CASES,
                         ids=[f"{k} {d}" for k, d, __ in ORDER_CASES])
@pytest_twisted.ensureDeferred
async def test_items_are_ordered_by_each_key_and_direction(storage, key, direction,
                                                           expected):
    await fill(storage)
    assert await found(storage, order=[[key, direction]]) == expected
    assert await found(storage, order={"by": key, "direction": direction}) == expected


@pytest_twisted.ensureDeferred
async def test_order_by_a_parsed_path_puts_numbers_then_strings_then_missing(storage):
    await fill(storage)
    # numbers by value, then strings, then items without a value (in both directions)
    assert await found(storage, order=[["path", "n", "asc"]]) == [
        "c1", "p1", "p4", "e1", "p2", "p3", "x1"]
    assert await found(storage, order=[["path", "n", "desc"]]) == [
        "p2", "e1", "p4", "p1", "c1", "p3", "x1"]
    assert await found(storage, order=[{"by": "path", "path": "published"}]) == [
        "p3", "p1", "p2", "e1", "p4", "c1", "x1"]
    assert await found(storage, order=[["path", ["author", "name"], "desc"]]) == [
        "p3", "c1", "p2", "e1", "p1", "x1", "p4"]
    # a second key breaks the ties of the first
    assert await found(storage, order=[["path", "author.name"], ["created", "desc"]]) == [
        "e1", "p1", "p2", "c1", "p3", "x1", "p4"]


@pytest_twisted.ensureDeferred
async def test_default_order_is_newest_first_or_best_first(storage):
    await fill(storage)
    assert await found(storage) == ["x1", "c1", "e1", "p4", "p3", "p2", "p1"]
    assert (await found(storage, fts="tomatoes"))[0] == "p1"


# paging and payload


@pytest_twisted.ensureDeferred
async def test_pages_walk_the_whole_result_with_its_total(storage):
    await fill(storage)
    order = [["created", "asc"]]
    seen = []
    index = 0
    while True:
        result = await storage.search.search_items({"profiles": ["alice"], "order": order,
                                             "index": index, "limit": 3})
        assert result.total == len(ITEMS) and result.index == index
        seen += [hit.item_id for hit in result.items]
        index += len(result.items)
        if not result.more:
            break
    assert seen == ["p1", "p2", "p3", "p4", "e1", "c1", "x1"]
    beyond = await storage.search.search_items({"profiles": ["alice"], "index": 50})
    assert (beyond.items, beyond.total, beyond.more) == ([], len(ITEMS), False)
    filtered = await storage.search.search_items({"profiles": ["alice"], "limit": 1,
                                           "conditions": [["n", ">", 0]]})
    assert (len(filtered.items), filtered.total, filtered.more) == (1, 4, True)


@pytest_twisted.ensureDeferred
async def test_raw_xml_is_returned_only_when_asked(storage):
    await fill(storage)
    query = {"profiles": ["alice"], "conditions": [["title", "==", "Tomatoes"]]}
    (plain,) = (await storage.search.search_items(query)).items
    assert plain.xml is None and "xml" not in plain.to_dict()
    (full,) = (await storage.search.search_items({**query, "payload": True})).items
    assert full.xml == xml("p1", ITEMS["p1"][2])
    data = full.to_dict()
    assert data == {
        "service": SERVICE, "node": BLOG, "id": "p1",
        "created": T0.isoformat(), "updated": (T0 + timedelta(seconds=15)).isoformat(),
        "parsed": ITEMS["p1"][1], "xml": xml("p1", ITEMS["p1"][2])}
    json.dumps(data)


# profiles


@pytest_twisted.ensureDeferred
async def test_each_profile_sees_only_its_own_items(storage):
    await fill(storage)
    bob = await storage.search.search_items({"profiles": ["bob"], "limit": MAX_LIMIT})
    assert sorted((h.profile, h.item_id) for h in bob.items) == [
        ("bob", "e1"), ("bob", "p1")]
    assert await found(storage, profiles=["bob"], fts="fresh") == ["p1"]
    alice = await storage.search.search_items({"profiles": ["alice"], "fts": "fresh"})
    assert [(h.profile, h.item_id) for h in alice.items] == [("alice", "p1")]
    assert await found(storage, profiles=["carol"]) == []


# invalid queries

INVALID = [
    ({"conditions": [["n", "=", 1]]}, "unknown operator '='"),
    ({"conditions": [["n", "; DROP TABLE x", 1]]}, "unknown operator"),
    ({"conditions": [["n", "regexp", "a"]]}, "unknown operator"),
    ({"conditions": [["a'); DROP TABLE x;--", "==", 1]]}, "invalid path"),
    ({"conditions": [["author.name'", "==", 1]]}, "invalid path"),
    ({"conditions": [[["author", "na me"], "==", 1]]}, "invalid path segment"),
    ({"conditions": [[["author", -1], "==", 1]]}, "invalid path segment"),
    ({"conditions": [[["author", True], "==", 1]]}, "invalid path segment"),
    ({"conditions": [["$.author", "==", 1]]}, "invalid path"),
    ({"conditions": [["author..name", "==", 1]]}, "invalid path"),
    ({"conditions": [[".author", "==", 1]]}, "invalid path"),
    ({"conditions": [["links[x]", "==", 1]]}, "invalid path"),
    ({"conditions": [["1abc", "==", 1]]}, "invalid path"),
    ({"conditions": [["", "==", 1]]}, "empty path"),
    ({"conditions": [[".".join(["a"] * 17), "==", 1]]}, "deeper than"),
    ({"conditions": [[12, "==", 1]]}, "invalid path"),
    ({"conditions": [["n", "==", {"a": 1}]]}, "is a dict"),
    ({"conditions": [["n", "==", [1]]]}, "is a list"),
    ({"conditions": [["n", ">", True]]}, "compare with a number or a string"),
    ({"conditions": [["n", ">", None]]}, "compare with a number or a string"),
    ({"conditions": [["n", "==", float("nan")]]}, "not a number JSON can hold"),
    ({"conditions": [["n", "between", [1]]]}, "exactly 2 values"),
    ({"conditions": [["n", "between", [1, 2, 3]]]}, "exactly 2 values"),
    ({"conditions": [["n", "between", 1]]}, "expected a list"),
    ({"conditions": [["n", "between", [1, "2"]]]}, "all be of one type"),
    ({"conditions": [["n", "in", []]]}, "at least one value"),
    ({"conditions": [["n", "in", "abc"]]}, "expected a list"),
    ({"conditions": [["n", "in", [True]]]}, "numbers or strings"),
    ({"conditions": [["n", "overlap", list(range(101))]]}, "at most 100"),
    ({"conditions": [["n", "like", 5]]}, "pattern must be a string"),
    ({"conditions": [["n", "like", "abc\\"]]}, "ends with a lone"),
    ({"conditions": [["n", "==", 2**70]]}, "too large"),
    ({"conditions": [["n", "=="]]}, "invalid condition"),
    ({"conditions": [{"path": "n", "op": "==", "value": 1, "sql": "x"}]},
     "invalid condition"),
    ({"conditions": "n == 1"}, "conditions must be a list"),
    ({"conditions": [["n", "==", 1]] * 33}, "at most 32 conditions"),
    ({"order": "rank"}, "needs a full-text search"),
    ({"order": "name; DROP TABLE x"}, "unknown order"),
    ({"order": [["created", "sideways"]]}, "unknown direction"),
    ({"order": [["path"]]}, "needs the path"),
    ({"order": [["path", "a b"]]}, "invalid path"),
    ({"order": [{"by": "created", "path": "n"}]}, "takes no path"),
    ({"limit": MAX_LIMIT + 1}, f"from 1 to {MAX_LIMIT}"),
    ({"limit": 0}, f"from 1 to {MAX_LIMIT}"),
    ({"limit": "10"}, f"from 1 to {MAX_LIMIT}"),
    ({"index": -1}, "from 0"),
    ({"payload": "yes"}, "payload must be true or false"),
    ({"fts": "   "}, "no word"),
    ({"fts": "x" * 3000}, "at most"),
    ({"types": []}, "non-empty list"),
    ({"services": [None]}, "not a valid name"),
    ({"where": "1=1"}, "unknown query key"),
]


@pytest.mark.parametrize(("query", "message"), INVALID,
                         ids=[m + f" {i}" for i, (__, m) in enumerate(INVALID)])
@pytest_twisted.ensureDeferred
async def test_invalid_queries_are_refused_with_a_clear_message(storage, query, message):
    await fill(storage, bob=False)
    with pytest.raises(InvalidQuery, match=re.escape(message)):
        await storage.search.search_items({"profiles": ["alice"], **query})
    # and nothing was harmed
    assert len(await found(storage, limit=MAX_LIMIT)) == len(ITEMS)


def test_paths_are_parsed_from_both_forms():
    assert parse_path("author.name") == ("author", "name")
    assert parse_path("links[0].href") == ("links", 0, "href")
    assert parse_path("a[1][2]") == ("a", 1, 2)
    assert parse_path(["links", 0, "href"]) == ("links", 0, "href")
    assert SearchQuery(conditions=[("links[2].rel", "==", "x")]).conditions[0].path == (
        "links", 2, "rel")
    # objects built by hand are checked too
    with pytest.raises(InvalidQuery, match="invalid path segment"):
        SearchQuery(conditions=[Condition(("a'--",), "==", 1, "number")])
    with pytest.raises(InvalidQuery, match="unknown operator"):
        SearchQuery(conditions=[Condition(("a",), "OR 1=1", 1, "number")])
    with pytest.raises(InvalidQuery, match="unknown order"):
        SearchQuery(order=[Order("name; --", False)])
    assert SearchQuery(order=[Order("path", True, ("a", 0))]).order == (
        Order("path", True, ("a", 0)),)
    # InvalidQuery is a ValueError too
    with pytest.raises(ValueError, match="invalid path"):
        parse_path("a.b'")


# realistic microblog entries, parsed by the XEP-0277 parser

ATOM = "http://www.w3.org/2005/Atom"
ENTRIES = {
    "release": f"""<entry xmlns='{ATOM}'>
      <title>Release of the 0.22 version</title>
      <author><name>Timothée</name><uri>xmpp:edhelas@movim.eu</uri></author>
      <link rel='replies' href='xmpp:pubsub.movim.eu?;node=urn:xmpp:microblog:0:comments/r'/>
      <content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'><p>The new
        version is <b>out</b> and ready.</p></div></content>
      <category term='movim'/><category term='release'/>
      <published>2023-05-02T10:00:00Z</published>
      <updated>2023-05-02T12:30:15+02:00</updated>
    </entry>""",
    "thoughts": f"""<entry xmlns='{ATOM}'>
      <title type='text'>Some thoughts on federation</title>
      <content type='html'>&lt;p&gt;Federation is &lt;em&gt;good&lt;/em&gt;&lt;/p&gt;
      </content>
      <author><name>Louise</name><uri>xmpp:louise@example.org</uri></author>
      <category term='xmpp'/><category term='federation'/>
      <published>2024-01-31T23:59:59+01:00</published>
    </entry>""",
    "holiday": f"""<entry xmlns='{ATOM}'>
      <title>Holiday pictures</title>
      <content>Pictures of the release party and of the sea</content>
      <author><name>Louise</name><uri>xmpp:louise@example.org</uri></author>
      <link rel='enclosure' href='https://example.org/sea.jpg'/>
      <published>2024-07-14T08:00:00-04:00</published>
    </entry>""",
}


@pytest_twisted.ensureDeferred
async def test_search_microblog_entries_parsed_by_the_xep_0277_parser(storage):
    await storage.profiles.create_profile("alice")
    node = await storage.pubsub.set_pubsub_node("alice", "louise@example.org", BLOG,
                                                analyser="XEP-0277", type_="blog")
    rows = []
    for offset, (item_id, entry) in enumerate(ENTRIES.items()):
        item_xml = (f"<item xmlns='http://jabber.org/protocol/pubsub' id='{item_id}'>"
                    f"{entry}</item>")
        rows.append({"name": item_id, "data": item_xml,
                     "parsed": parse_entry(parse_xml(item_xml)),
                     "created": T0 + timedelta(minutes=offset)})
    await storage.pubsub.cache_pubsub_items(node.id, rows)

    async def blog(**query):
        return await found(storage, types=["blog"], **query)

    assert await blog(conditions=[["author.name", "==", "Louise"]],
                      order=[["path", "published", "desc"]]) == ["holiday", "thoughts"]
    assert await blog(conditions=[["author.jid", "==", "edhelas@movim.eu"]]) == [
        "release"]
    assert await blog(conditions=[["categories", "overlap", ["xmpp", "movim"]]],
                      order="created") == ["release", "thoughts"]
    assert await blog(conditions=[["categories", "disjoint", ["movim"]]],
                      order="created") == ["thoughts", "holiday"]
    # dates were normalised to UTC by the parser: 2024-01-31T23:59:59+01:00 is in January
    assert await blog(conditions=[["published", "between",
                                   ["2024-01-01T00:00:00", "2024-01-31T23:59:59"]]]) == [
        "thoughts"]
    assert await blog(conditions=[["published", ">=", "2024-07-14T12:00:00+00:00"]]) == [
        "holiday"]
    assert await blog(conditions=[["links[0].rel", "==", "enclosure"]]) == ["holiday"]
    assert await blog(conditions=[["content", "ilike", "%READY%"]]) == ["release"]
    assert await blog(conditions=[["title", "like", "Some thoughts%"]]) == ["thoughts"]
    # full text on the item's text, combined with parsed data
    assert sorted(await blog(fts="release")) == ["holiday", "release"]
    assert await blog(fts="release", conditions=[["author.name", "==", "Louise"]]) == [
        "holiday"]
    result = await storage.search.search_items({"profiles": ["alice"], "fts": "pictures sea",
                                         "payload": True})
    (hit,) = result.items
    assert hit.item_id == "holiday" and hit.parsed["title"] == "Holiday pictures"
    assert hit.xml == rows[2]["data"] and hit.rank is not None


# the cache_search bridge method


@pytest_twisted.ensureDeferred
async def test_cache_search_bridge_method_answers_json_for_the_calling_profile(storage):
    from libervia.backend.bridge import errors
    from tests.unit.plugins.cache_env import Host

    await fill(storage)
    host = Host(storage)
    assert "cache_search" in host.bridge.methods

    async def call(profile, query=None):
        params = {"profile": profile}
        if query is not None:
            params["query"] = query
        answer = await host.bridge.call("cache_search", params)
        # what goes on the wire
        return json.loads(json.dumps(answer))

    answer = await call("alice", {"fts": "fresh", "payload": True})
    (hit,) = answer["items"]
    assert (answer["total"], answer["index"], answer["more"]) == (1, 0, False)
    assert {k: v for k, v in hit.items() if k != "rank"} == {
        "service": SERVICE, "node": BLOG, "id": "p1", "created": T0.isoformat(),
        "updated": (T0 + timedelta(seconds=15)).isoformat(), "parsed": ITEMS["p1"][1],
        "xml": xml("p1", ITEMS["p1"][2])}
    assert isinstance(hit["rank"], float)
    # no payload, no rank unless asked for or searched
    answer = await call("alice", {"conditions": [["author.name", "==", "Alice"]],
                                  "order": "created", "limit": 1})
    assert [i["id"] for i in answer["items"]] == ["p1"] and answer["more"] is True
    assert "xml" not in answer["items"][0] and "rank" not in answer["items"][0]
    # bob only ever sees his own items, and alice hers
    answer = await call("bob", {"limit": MAX_LIMIT})
    assert sorted(i["id"] for i in answer["items"]) == ["e1", "p1"]
    assert (await call("alice"))["total"] == len(ITEMS)
    # services are JIDs, compared as the cache stores them (bare)
    answer = await call("alice", {"services": [OTHER + "/resource"]})
    assert [i["id"] for i in answer["items"]] == ["c1"]
    # refusals reach the frontend typed, with their message
    for query, message in (
        ({"profiles": ["bob"]}, "covers the calling profile"),
        ({"conditions": [["n", "=~", 1]]}, "unknown operator '=~'"),
        ({"conditions": [["a'); DROP TABLE x;--", "==", 1]]}, "invalid path"),
        ({"limit": 10_000}, "limit must be"),
        ({"services": ["@@"]}, "invalid service JID"),
    ):
        with pytest.raises(InvalidQuery, match=re.escape(message)) as raised:
            await call("alice", query)
        wire = errors.error_object(raised.value)
        assert wire["data"]["type"] == "InvalidQuery" and message in wire["message"]
    with pytest.raises(errors.InvalidParams, match='"query" must be an object or null'):
        await call("alice", ["not", "an", "object"])
    with pytest.raises(errors.InvalidParams, match="where"):
        await host.bridge.call("cache_search", {"profile": "alice", "where": "1=1"})
    assert (await call("alice"))["total"] == len(ITEMS)


# PostgreSQL databases whose locale sorts strings otherwise


@pytest.fixture
def icu_postgresql_url(postgresql_server_url):
    """A PostgreSQL database collating text as English does (ICU): "a" < "B"."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    name = f"libervia_test_icu_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgresql_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            try:
                conn.execute(text(
                    f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                    "ICU_LOCALE 'en-US' LOCALE 'C'"))
            except DBAPIError as e:
                pytest.skip(f"this PostgreSQL server has no ICU collations: {e}")
        yield postgresql_server_url.set(database=name).render_as_string(
            hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_strings_compare_the_same_whatever_the_database_locale(
        make_storage, icu_postgresql_url):
    storage = await make_storage(icu_postgresql_url)
    await fill(storage)
    # the locale itself would put "bicycle trip" before "Tomatoes"
    assert await found_set(storage, ("title", ">", "Tomatoes")) == ["c1", "p2"]
    for condition, expected in OPERATOR_CASES:
        assert await found_set(storage, condition) == sorted(expected), condition
    for key, direction, expected in ORDER_CASES:
        assert await found(storage, order=[[key, direction]]) == expected, key
    assert await found(storage, order=[["path", ["author", "name"], "desc"]]) == [
        "p3", "c1", "p2", "e1", "p1", "x1", "p4"]
