"""Values of the right type that a method can't use end in a typed error of the method.

The bridge checks the types of the parameters (see ``tests/unit/bridge``); what it
can't know is whether a value of the right type can be used: a NUL in a search text
(neither SQLite's full-text parser nor PostgreSQL's text take it), a count or position
beyond what the database takes, an item id XML can't carry.  Each of the cases the
fuzzer found (on SQLite and PostgreSQL) answers a typed error, or is served, and the
profile goes on being served.
"""

import pytest
import pytest_twisted

from libervia.backend.bridge import errors
from libervia.backend.memory.engines import MAX_SQL_INTEGER
from libervia.backend.memory.storage import InvalidQuery, SearchQuery
from tests.unit.plugins.cache_env import BLOG, SERVICE, Env
from tests.unit.plugins.fake_pubsub import FakePubsubService

NODE = {"profile": "alice", "service": SERVICE.full(), "node": BLOG}


@pytest.fixture
def env(storage):
    return Env(storage, FakePubsubService("ejabberd"))


async def answer(env, method, **params):
    """The result, or the error object the frontend gets."""
    try:
        return {"result": await env.host.bridge.call(method, params)}
    except Exception as e:
        return {"error": errors.error_object(e)}


def error_of(answer):
    return answer["error"]["data"]["type"], answer["error"]["message"]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("max_items", ["5", 1.5, True, [5], {}])
async def test_cache_get_max_items_of_a_wrong_type_is_invalid_params(env, max_items):
    await env.sync()
    got = await answer(env, "cache_get", **NODE, max_items=max_items)
    assert error_of(got)[0] == "InvalidParams"
    assert 'parameter "max_items" must be an integer or null' in error_of(got)[1]


@pytest_twisted.ensureDeferred
async def test_cache_get_refuses_a_negative_max_items_as_pubsub_get_does(env):
    await env.sync()
    for method in ("cache_get", "pubsub_get"):
        got = await answer(env, method, **NODE, max_items=-1)
        assert error_of(got) == ("InvalidRequest",
                                 "max_items must be a positive integer, not -1")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("params", [{"max_items": 2**63}, {"max_items": 2**64},
                                    {"rsm": {"max": 2**63}}, {"rsm": {"index": 2**63}},
                                    {"max_items": MAX_SQL_INTEGER + 1}])
async def test_cache_get_counts_beyond_what_the_database_takes_answer_like_the_service(
        env, params):
    await env.sync()
    cached = (await answer(env, "cache_get", **NODE, **params))["result"]
    remote = (await answer(env, "pubsub_get", **NODE, use_cache=False, **params))["result"]
    assert cached["items"] == remote["items"]
    assert cached["metadata"]["cached"] is True


@pytest_twisted.ensureDeferred
async def test_cache_get_item_ids_and_cursors_xml_cant_carry_are_refused(env):
    await env.sync()
    got = await answer(env, "cache_get", **NODE, item_ids=["i00", "a\x00b"])
    assert error_of(got) == ("InvalidRequest", "an item id must be a non-empty string "
                             "(1024 characters max) of characters XML allows (no control "
                             "character)")
    got = await answer(env, "cache_get", **NODE, rsm={"after": "\x00"})
    assert error_of(got)[0] == "InvalidRequest" and "RSM cursor" in error_of(got)[1]
    got = await answer(env, "cache_get", **NODE, rsm={"nope": 1})
    assert error_of(got) == ("InvalidRequest", "unknown RSM parameter(s): nope")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("item_ids", [1.5, True, "i00", [1], None])
async def test_pubsub_retract_item_ids_of_a_wrong_type_are_invalid_params(env, item_ids):
    await env.sync()
    sent = len(env.client.sent)
    got = await answer(env, "pubsub_retract", **NODE, item_ids=item_ids)
    assert error_of(got)[0] == "InvalidParams" and '"item_ids"' in error_of(got)[1]
    assert len(env.client.sent) == sent


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("bad_id", ["a\x00b", "\ufffe", "", "x" * 1025])
async def test_pubsub_retract_ids_xml_cant_carry_are_refused_before_sending(env, bad_id):
    await env.sync()
    sent = len(env.client.sent)
    got = await answer(env, "pubsub_retract", **NODE, item_ids=["i00", bad_id])
    assert error_of(got)[0] == "InvalidRequest" and "item id" in error_of(got)[1]
    assert len(env.client.sent) == sent
    assert "i00" in env.service.ids(BLOG)
    # the profile is still served
    served = (await answer(env, "pubsub_get", **NODE))["result"]
    assert len(served["items"]) == 12


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("query", "message"), [
    ({"fts": "\u0000"}, "fts: a string can't hold a NUL character (U+0000)"),
    ({"fts": "fresh\u0000"}, "fts: a string can't hold a NUL character"),
    ({"index": 2**63}, f"index must be an integer from 0 to {MAX_SQL_INTEGER}, not "
     f"{2**63}"),
    ({"index": MAX_SQL_INTEGER + 1}, "index must be an integer from 0"),
    ({"conditions": [["title", "==", "a\u0000"]]}, "condition title ==: a string can't "
     "hold a NUL character"),
    ({"nodes": ["\u0000"]}, "nodes: a string can't hold a NUL character"),
    ({"services": [{}]}, "services: {} is not a valid name"),
    ({"services": [""]}, "invalid service JID"),
])
async def test_cache_search_values_the_database_cant_take_are_invalid_query(
        env, query, message):
    await env.sync()
    got = await answer(env, "cache_search", profile="alice", query=query)
    assert error_of(got)[0] == "InvalidQuery" and message in error_of(got)[1]
    served = (await answer(env, "cache_search", profile="alice", query={"index": 2}))
    assert served["result"]["total"] == 12 and served["result"]["index"] == 2


def test_search_query_parser_refuses_nul_and_positions_beyond_the_database():
    with pytest.raises(InvalidQuery, match="NUL"):
        SearchQuery.from_dict({"fts": "a\x00"})
    with pytest.raises(InvalidQuery, match="index must be an integer from 0 to"):
        SearchQuery(index=MAX_SQL_INTEGER + 1)
    assert SearchQuery(index=MAX_SQL_INTEGER).index == MAX_SQL_INTEGER


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method", ["cache_stats", "cache_reset", "cache_search",
                                    "cache_purge"])
@pytest.mark.parametrize("profile", ["a\x00b", "", "x" * 100])
async def test_cache_methods_refuse_names_no_profile_can_have(env, method, profile):
    # the bridge answers for every method taking a profile, before the method runs
    got = await answer(env, method, profile=profile)
    assert error_of(got)[0] == "ProfileNotFound"
    assert error_of(got)[1].startswith("there is no profile named ")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("nodes", [["a\x00b"], ["\ufffe"]])
async def test_cache_purge_filters_no_item_can_match_are_refused(env, nodes):
    await env.sync()
    got = await answer(env, "cache_purge", profile="alice", nodes=nodes)
    assert error_of(got)[0] == "InvalidRequest" and "node name" in error_of(got)[1]
    assert len(await env.cached_rows()) == 12
