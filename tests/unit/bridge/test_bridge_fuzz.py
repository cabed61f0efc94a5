"""Every bridge method, fuzzed from its declared parameters, answers a result or a
typed error: never an internal error, never a traceback in the log.

The backend is a real one with all the project's plugins (the entry points of the
distribution), on SQLite, without an XMPP server: profile ``alice`` is "connected"
through a stub client whose requests a fake pubsub service answers, and any real
connection attempt is refused at once by a closed port on the loopback.  The methods
are the ones registered: a new plugin's methods are fuzzed without changing this test.

Each method gets well-typed, wrongly typed, missing and extra parameters, drawn by
hypothesis from the parameters the bridge read from its type hints, with hostile
strings (NUL, lone surrogates, control characters, 5000 characters) and huge numbers
mixed in.  The seed is fixed; the CI runs :data:`EXAMPLES` examples per method.  For a
full-size run (some minutes)::

    LIBERVIA_BRIDGE_FUZZ_EXAMPLES=2000 tools/run-tests tests/unit/bridge/test_bridge_fuzz.py
"""

import importlib.metadata
import json
import os
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from libervia.backend.app.main import Backend
from libervia.backend.bridge import errors
from libervia.backend.bridge.params import (
    AnyChecker,
    Checker,
    ContainerChecker,
    LiteralChecker,
    ScalarChecker,
    UnionChecker,
)
from libervia.backend.bridge.protocol import BridgeFactory, decode, encode
from libervia.backend.core.config import Config
from libervia.backend.core.constants import C
from libervia.backend.xmpp.client import ConnectionState, XMPPClient
from libervia.backend.xmpp.profiles import ConnectionOptions
from tests.unit.bridge.helpers import Client
from tests.unit.plugins.fake_pubsub import FakePubsubService, StubClient

EXAMPLES = int(os.environ.get("LIBERVIA_BRIDGE_FUZZ_EXAMPLES", "50"))
SEED = 20261207
#: seconds a call may take (storage calls run in threads; nothing waits on a network)
CALL_TIMEOUT = 20

SERVICE = "pubsub.example.org"
BLOG = "urn:xmpp:microblog:0"

#: strings that mean something to the methods, so that calls go past the first check
MEANINGFUL = ["alice", "bob", SERVICE, BLOG, "alice@example.org", "i00", "i01",
              "2024-01-01T00:00:00", "2024-01-01T00:00:00+02:00", "SCRAM-SHA-256", "PLAIN",
              "created", "updated", "blog", "==", "title", "pubsub#max_items", "*"]
HOSTILE = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\x01\x08\x1f\x7f", "\ufffe",
           "\uffff", "\n\r\t", "x" * 5000, "a@b@c", "@", "/", "é€𝄞", "'; DROP TABLE x;--",
           "%_\\", "<a/>", "&amp;", "NaN", "-1"]
#: values of parameters naming what exists (alice's cache holds the blog of SERVICE):
#: given half of the time, so that calls reach the end of the methods
EXISTING = {"profile": "alice", "name": "alice", "service": SERVICE, "node": BLOG}
#: keys of the objects methods take (search queries, RSM, node options)
KEYS = ["fts", "conditions", "order", "limit", "index", "services", "nodes", "types",
        "subtypes", "payload", "profiles", "max", "after", "before", "created_before",
        "pubsub#max_items", "pubsub#title", "pubsub#access_model", "FORM_TYPE"]
HUGE = [2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**100)]

texts = st.one_of(st.sampled_from(MEANINGFUL), st.sampled_from(HOSTILE), st.text(max_size=30))
integers = st.one_of(st.integers(-5, 50), st.sampled_from(HUGE), st.integers())
floats = st.floats(allow_nan=False, allow_infinity=False)
keys = st.one_of(st.sampled_from(KEYS), texts)
json_values = st.recursive(
    st.none() | st.booleans() | integers | floats | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children,
                                                                       max_size=4),
    max_leaves=12,
)


def well_typed(checker: Checker) -> st.SearchStrategy:
    """Values of the type ``checker`` accepts."""
    if isinstance(checker, AnyChecker):
        return json_values
    if isinstance(checker, LiteralChecker):
        return st.sampled_from(checker.values)
    if isinstance(checker, UnionChecker):
        return st.one_of([well_typed(o) for o in checker.options])
    if isinstance(checker, ContainerChecker):
        items = well_typed(checker.item)
        if checker.kind is list:
            return st.lists(items, max_size=5)
        return st.dictionaries(keys, items, max_size=5)
    assert isinstance(checker, ScalarChecker), checker
    return {str: texts, int: integers, float: floats | integers, bool: st.booleans(),
            None: st.none()}[checker.kind]


@st.composite
def calls(draw: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """Parameters of a call: each well-typed, wrongly typed or missing; maybe extras."""
    params = {}
    for name, parameter in parameters.items():
        kind = draw(st.sampled_from(("good",) * 6 + ("wrong", "missing")))
        if kind == "good":
            good = well_typed(parameter.checker)
            if name in EXISTING:
                good = st.one_of(st.just(EXISTING[name]), good)
            params[name] = draw(good)
        elif kind == "wrong":
            params[name] = draw(json_values)
    if draw(st.sampled_from((False,) * 9 + (True,))):
        params[draw(keys)] = draw(json_values)
    return params


class ConnectedStub(StubClient):
    """Profile alice's client: "connected", its requests answered by a fake service."""

    state = ConnectionState.CONNECTED
    is_connected = True

    def __init__(self, service: FakePubsubService) -> None:
        super().__init__("alice", service)
        self.xmlstream = object()  # the stream the cache's checks hold for
        # what profile_set_password clears
        self.factory = SimpleNamespace(authenticator=SimpleNamespace(sasl_key_cache=None))
        self.stanzas_sent: list[Any] = []

    def info(self) -> dict[str, Any]:
        return {"profile": "alice", "state": self.state.value}

    def send(self, obj: Any) -> None:
        """What a connected profile sends (a message, a presence) goes nowhere."""
        self.stanzas_sent.append(obj)

    def connect(self) -> defer.Deferred:
        return defer.succeed(self)

    def disconnect(self) -> defer.Deferred:
        return defer.succeed(None)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fuzz_backend(tmp_path, monkeypatch):
    """A started Backend with all the project's plugins; no connection leaves it."""
    port = closed_port()

    def refused(client: XMPPClient) -> Any:
        # every profile "connects" to a closed port of the loopback: refused at once,
        # whatever host or domain the fuzzer gave it
        return client.reactor.connectTCP("127.0.0.1", port, client.factory, timeout=5)

    monkeypatch.setattr(XMPPClient, "_open_connection", refused)
    plugins = [ep for ep in importlib.metadata.entry_points(group=C.PLUGINS_ENTRY_POINT_GROUP)
               if ep.value.startswith("libervia.backend.plugins.")]
    with tempfile.TemporaryDirectory(prefix="fuzz-") as run:
        config = Config.from_dict({"DEFAULT": {"local_dir": tmp_path / "local"},
                                   "bridge": {"socket": Path(run) / "bridge.sock"}})
        backend = Backend(config, reactor=reactor, plugin_entry_points=plugins)
        pytest_twisted.blockon(backend.startService())
        try:
            loaded = {r["import_name"] for r in backend.plugin_manager.report()
                      if r["state"] == "loaded"}
            assert loaded == {ep.name for ep in plugins}
            yield backend
        finally:
            backend.clients.clients.clear()  # the stub has no connection to close
            pytest_twisted.blockon(backend.stopService())


def fake_service() -> FakePubsubService:
    service = FakePubsubService("ejabberd")
    service.create(BLOG)
    for n in range(3):
        service.publish(BLOG, f"i{n:02}")
    return service


async def reset_alice(backend: Backend, service: FakePubsubService) -> None:
    """Profile alice exists, is connected, and its cache holds the blog of the service
    (a previous method may have deleted, disconnected or purged them)."""
    if not await backend.profiles.exists("alice"):
        await backend.profiles.create(
            "alice", "alice@example.org", "alice's password",
            ConnectionOptions(host="127.0.0.1", port=closed_port()))
    backend.clients.clients["alice"] = ConnectedStub(service)
    state = await backend.bridge.call("cache_sync", {"profile": "alice",
                                                     "service": SERVICE, "node": BLOG})
    assert state["state"] == "completed", state


async def answer_of(frontend: Client, method: str, params: dict[str, Any]
                    ) -> dict[str, Any]:
    """What the frontend gets: the result or the error, as on the wire."""
    frontend.transport.clear()  # signals it subscribed to
    d = frontend.protocol.bridge.call(method, params, connection=frontend.protocol)
    d.addTimeout(CALL_TIMEOUT, reactor)
    try:
        result = await d
    except defer.TimeoutError:
        return {"hang": True}
    except Exception as e:
        return {"error": errors.error_object(e), "failure": Failure()}
    try:
        encode({"jsonrpc": "2.0", "result": result, "id": 1})
    except (TypeError, ValueError) as e:
        return {"unencodable": str(e)}
    return {"result": result}


def fuzzer(frontend: Client, name: str, failures: list[Any], reached: set[str]) -> Any:
    """The hypothesis test of method ``name``; it runs in a thread, the calls in the
    reactor's."""

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(params=calls(frontend.protocol.bridge.methods[name].parameters.parameters))
    def fuzz(params: dict[str, Any]) -> None:
        # what a frontend sends is decoded JSON: huge integers, escaped surrogates...
        params = decode(json.dumps(params).encode())
        answer = threads.blockingCallFromThread(
            reactor, lambda: defer.ensureDeferred(answer_of(frontend, name, params)))
        call = f"{name}({params!r})"
        assert "hang" not in answer, f"{call} did not answer in {CALL_TIMEOUT} s"
        assert "unencodable" not in answer, (
            f"{call} returned what JSON can't carry: {answer.get('unencodable')}")
        error_type = answer["error"]["data"]["type"] if "error" in answer else None
        assert error_type != "InternalError", (
            f"{call} answered an internal error:\n" + answer["failure"].getTraceback())
        if error_type != "InvalidParams":
            reached.add(name)
        assert not failures, f"{call} logged a failure: {failures[0]}"

    return fuzz


@pytest_twisted.ensureDeferred
async def test_every_bridge_method_answers_a_result_or_a_typed_error(fuzz_backend):
    bridge = fuzz_backend.bridge
    frontend = Client(BridgeFactory(bridge))
    service = fake_service()
    failures: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if event.get("log_failure") is not None or (level is not None
                                                    and level.name == "critical"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    reached: set[str] = set()
    try:
        for name in sorted(bridge.methods):
            await reset_alice(fuzz_backend, service)
            await threads.deferToThread(fuzzer(frontend, name, failures, reached))
    finally:
        globalLogPublisher.removeObserver(observe)
    # the plugins' methods were among them, and each method ran (some calls went past
    # the check of their parameters)
    assert {"cache_get", "cache_search", "pubsub_get", "profile_create"} <= set(bridge.methods)
    assert reached == set(bridge.methods), sorted(set(bridge.methods) - reached)
