"""The bridge protocol, driven through in-memory transports: no socket, no sleep."""

import json

import pytest
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from libervia.backend.bridge import PROTOCOL_VERSION, errors
from libervia.backend.core import log
from libervia.backend.core.exceptions import BackendError, ConflictError, NotFound
from tests.unit.bridge.helpers import Client


@pytest.fixture
def log_events():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# calls


def test_bridge_info_gives_protocol_and_backend_versions_and_lists_methods(client, backend):
    client.call("bridge_info", request_id="a")
    answer = client.answer()
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == "a"
    info = answer["result"]
    assert info["protocol_version"] == PROTOCOL_VERSION
    assert info["backend_version"] == backend.version
    assert info["max_frame_size"] == 1024
    assert {"bridge_info", "backend_status", "plugin_list", "subscribe"} <= set(
        info["methods"]
    )
    assert "backend_status" in info["signals"]


def test_backend_status_reports_status_version_uptime_and_readiness(client, backend):
    backend.reactor.advance(12.5)
    client.call("backend_status")
    result = client.answer()["result"]
    assert result == {
        "status": "stopped", "version": backend.version, "uptime": 12.5, "ready": False,
    }


def test_plugin_list_is_the_plugin_managers_report(client, backend):
    client.call("plugin_list")
    assert client.answer()["result"] == backend.plugin_manager.report()


def test_plain_method_gets_params_by_name(client, bridge):
    def add(a: int, b: int = 10) -> int:
        return a + b

    bridge.register_method("test.add", add)
    client.call("test.add", request_id=1, a=1, b=2)
    client.call("test.add", request_id=2, a=5)
    assert [m["result"] for m in client.received()] == [3, 15]


def test_coroutine_method_answers_its_result(client, bridge):
    async def double(value: int) -> int:
        return value * 2

    bridge.register_method("double", double)
    client.call("double", value=21)
    assert client.answer()["result"] == 42


def test_deferred_method_answers_when_fired_and_others_answer_meanwhile(client, bridge):
    pending = defer.Deferred()
    bridge.register_method("slow", lambda: pending)
    bridge.register_method("fast", lambda: "fast")
    client.call("slow", request_id="slow")
    client.call("fast", request_id="fast")
    assert client.received() == [{"jsonrpc": "2.0", "result": "fast", "id": "fast"}]
    pending.callback({"done": True})
    assert client.answer() == {"jsonrpc": "2.0", "result": {"done": True}, "id": "slow"}


def test_notification_is_executed_without_answer(client, bridge):
    calls = []
    def note(text: str) -> None:
        calls.append(text)

    bridge.register_method("note", note)
    client.send({"jsonrpc": "2.0", "method": "note", "params": {"text": "hi"}})
    assert calls == ["hi"]
    assert client.received() == []


def test_missing_or_unknown_params_are_refused_before_calling(client, bridge):
    calls = []
    def needs_a(a: int) -> None:
        calls.append(a)

    bridge.register_method("needs_a", needs_a)
    client.call("needs_a", request_id=1)
    client.call("needs_a", request_id=2, a=1, z=2)
    client.send({"jsonrpc": "2.0", "method": "needs_a", "params": [1], "id": 3})
    answers = client.received()
    assert [a["error"]["code"] for a in answers] == [errors.INVALID_PARAMS] * 3
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert all(a["error"]["data"]["type"] == "InvalidParams" for a in answers)
    assert "by name" in answers[2]["error"]["message"]
    assert calls == []


def test_unknown_method_is_method_not_found(client):
    client.call("no_such_method", request_id=7)
    answer = client.answer()
    assert answer["id"] == 7
    assert answer["error"]["code"] == errors.METHOD_NOT_FOUND
    assert answer["error"]["data"]["type"] == "MethodNotFound"
    assert "no_such_method" in answer["error"]["message"]


def test_connection_param_is_reserved_for_methods_asking_for_it(client, bridge):
    seen = []
    bridge.register_method("who", lambda connection: seen.append(connection),
                           with_connection=True)
    client.call("who")
    assert seen == [client.protocol]
    client.call("who", connection="forged")
    assert client.received()[-1]["error"]["code"] == errors.INVALID_PARAMS
    assert len(seen) == 1


# typed errors


def test_backend_errors_cross_with_code_type_and_message(client, bridge):
    class NoSuchNode(NotFound):
        pass

    def fail(kind: str) -> None:
        raise {"nf": NotFound("no profile named bob"),
               "sub": NoSuchNode("node urn:x is gone"),
               "conflict": ConflictError("profile alice exists"),
               "base": BackendError("generic")}[kind]

    bridge.register_method("fail", fail)
    for i, kind in enumerate(("nf", "sub", "conflict", "base")):
        client.call("fail", request_id=i, kind=kind)
    got = [(a["error"]["code"], a["error"]["data"]["type"], a["error"]["message"])
           for a in client.received()]
    assert got == [
        (errors.NOT_FOUND, "NotFound", "no profile named bob"),
        (errors.NOT_FOUND, "NoSuchNode", "node urn:x is gone"),
        (errors.CONFLICT, "ConflictError", "profile alice exists"),
        (errors.BACKEND_ERROR, "BackendError", "generic"),
    ]


def test_registered_error_code_is_used_for_subclasses(client, bridge):
    class QuotaExceeded(BackendError):
        pass

    class DiskQuotaExceeded(QuotaExceeded):
        pass

    errors.register_error(QuotaExceeded, -32077)

    def fail():
        raise DiskQuotaExceeded("disk full")

    bridge.register_method("fill", fail)
    client.call("fill")
    error = client.answer()["error"]
    assert (error["code"], error["data"]["type"]) == (-32077, "DiskQuotaExceeded")


def test_register_error_refuses_codes_outside_the_server_range():
    with pytest.raises(ValueError, match="server range"):
        errors.register_error(BackendError, -1)
    with pytest.raises(ValueError, match="BackendError"):
        errors.register_error(KeyError, -32050)


def test_unexpected_error_is_generic_and_logged_with_its_traceback(
    client, bridge, log_events
):
    def buggy():
        raise KeyError("/home/alice/secret-path password=hunter2")

    bridge.register_method("buggy", buggy)
    client.call("buggy", request_id=3)
    answer = client.answer()
    assert answer["id"] == 3
    assert answer["error"] == {
        "code": errors.INTERNAL_ERROR,
        "message": errors.INTERNAL_ERROR_MESSAGE,
        "data": {"type": "InternalError"},
    }
    failures = [e for e in log_events if "log_failure" in e]
    assert failures and failures[-1]["log_failure"].check(KeyError)


def test_registered_secrets_are_redacted_from_error_messages(client, bridge):
    log.register_secret("correct horse battery")

    def fail():
        raise BackendError("login refused with password correct horse battery")

    bridge.register_method("login", fail)
    client.call("login")
    message = client.answer()["error"]["message"]
    assert "correct horse" not in message
    assert log.REDACTED in message


def test_result_json_cannot_carry_gives_an_internal_error(client, bridge):
    bridge.register_method("bad_result", lambda: {"value": object()})
    bridge.register_method("nan_result", lambda: float("nan"))
    client.call("bad_result", request_id=1)
    client.call("nan_result", request_id=2)
    answers = client.received()
    assert [(a["id"], a["error"]["code"]) for a in answers] == [
        (1, errors.INTERNAL_ERROR), (2, errors.INTERNAL_ERROR)
    ]


def test_lone_surrogates_in_results_are_escaped_into_valid_utf8(client, bridge):
    # parameters can't hold them (see test_bridge_params), but a result might
    def surrogate() -> str:
        return "a\ud800b"

    bridge.register_method("surrogate", surrogate)
    client.call("surrogate", request_id=1)
    assert client.answer()["result"] == "a\ud800b"


# registration


def test_register_method_validates_names_and_refuses_duplicates(bridge):
    bridge.register_method("pubsub.get_items", lambda: None)
    with pytest.raises(ConflictError):
        bridge.register_method("pubsub.get_items", lambda: None)
    for bad in ("", "Upper", "1abc", "a-b", "a..b", "a."):
        with pytest.raises(ValueError):
            bridge.register_method(bad, lambda: None)


def test_method_doc_defaults_to_the_first_docstring_line(client, bridge):
    def documented():
        """Do something useful.

        Long explanation.
        """

    bridge.register_method("documented", documented)
    client.call("bridge_info")
    assert client.answer()["result"]["methods"]["documented"] == "Do something useful."


def test_unregistered_method_is_no_longer_callable(client, bridge):
    bridge.register_method("temp", lambda: 1)
    bridge.unregister_method("temp")
    client.call("temp")
    assert client.answer()["error"]["code"] == errors.METHOD_NOT_FOUND


# signals


def test_signals_reach_only_subscribed_clients_as_notifications(make_client, bridge):
    bridge.register_signal("item_cached", "an item entered the cache")
    bridge.register_signal("other", "")
    some, every, none = make_client(), make_client(), make_client()
    some.call("subscribe", signals=["item_cached"])
    assert some.answer()["result"] == ["item_cached"]
    every.call("subscribe")
    assert every.answer()["result"] == "*"

    assert bridge.emit_signal("item_cached", node="urn:x", item_id="1") == 2
    assert bridge.emit_signal("other", n=1) == 1
    expected = {"jsonrpc": "2.0", "method": "item_cached",
                "params": {"node": "urn:x", "item_id": "1"}}
    assert some.received() == [expected]
    assert every.received() == [expected, {"jsonrpc": "2.0", "method": "other",
                                           "params": {"n": 1}}]
    assert none.received() == []


def test_unsubscribe_stops_signals(client, bridge):
    bridge.register_signal("a", "")
    bridge.register_signal("b", "")
    client.call("subscribe")
    client.call("unsubscribe", request_id=2, signals=["a"])
    assert client.received()[-1]["result"] == sorted(
        set(bridge.signals) - {"a"}
    )
    bridge.emit_signal("a")
    bridge.emit_signal("b")
    assert [m["method"] for m in client.received()] == ["b"]
    client.call("unsubscribe")
    bridge.emit_signal("b")
    assert client.received() == [{"jsonrpc": "2.0", "result": [], "id": 1}]


def test_subscribing_to_an_unknown_signal_is_invalid_params(client):
    client.call("subscribe", signals=["nope"])
    error = client.answer()["error"]
    assert error["code"] == errors.INVALID_PARAMS
    assert "nope" in error["message"]
    client.call("subscribe", signals="backend_status")
    assert client.answer()["error"]["code"] == errors.INVALID_PARAMS


def test_emitting_an_undeclared_signal_is_a_programming_error(bridge):
    with pytest.raises(ValueError, match="not registered"):
        bridge.emit_signal("never_declared")


def test_backend_status_changes_are_signalled(client, backend):
    client.call("subscribe", signals=["backend_status"])
    client.received()
    backend.set_status("ready")
    assert client.received() == [
        {"jsonrpc": "2.0", "method": "backend_status", "params": {"status": "ready"}}
    ]


def test_signal_data_json_cannot_carry_is_logged_not_raised(client, bridge, log_events):
    bridge.register_signal("odd", "")
    client.call("subscribe")
    client.received()
    assert bridge.emit_signal("odd", value=object()) == 0
    assert client.received() == []
    assert any("odd" in str(e.get("name")) for e in log_events if "log_failure" in e)


# hostile or broken input: an error answer, and the connection goes on


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"garbage", errors.PARSE_ERROR),
        (b"\xff\xfe\x00not utf-8", errors.PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "method": "bridge_info", "id": 1', errors.PARSE_ERROR),
        (b"[" * 100_000 + b"]" * 100_000, errors.PARSE_ERROR),
        (b'{"jsonrpc":"2.0","method":"x","id":NaN}', errors.PARSE_ERROR),
        (b'{"jsonrpc":"2.0","method":"x","id":' + b"9" * 5000 + b"}", errors.PARSE_ERROR),
        (b"42", errors.INVALID_REQUEST),
        (b'"a string"', errors.INVALID_REQUEST),
        (b"null", errors.INVALID_REQUEST),
        (b'[{"jsonrpc":"2.0","method":"bridge_info","id":1}]', errors.INVALID_REQUEST),
        (b'{"method":"bridge_info","id":1}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","method":"bridge_info","id":1}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":42,"id":1}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"bridge_info","id":{"a":1}}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"bridge_info","id":true}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"bridge_info","id":1e999}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","result":1,"id":1}', errors.INVALID_REQUEST),
    ],
    ids=lambda v: v[:30] if isinstance(v, bytes) else str(v),
)
def test_bad_message_gets_an_error_and_the_connection_goes_on(factory, frame, code):
    factory.max_frame_size = 1024 * 1024
    client = Client(factory)
    client.send_raw(frame + b"\n")
    error = client.answer()
    assert error["error"]["code"] == code
    # the id is echoed when it could be read, as JSON-RPC asks
    assert error["id"] == (1 if frame.startswith(b"{") and frame.endswith(b'"id":1}') else None)
    assert "Traceback" not in error["error"]["message"]
    assert not client.closed
    client.call("backend_status", request_id="next")
    assert client.answer()["id"] == "next"


def test_invalid_request_with_a_valid_id_is_answered_with_that_id(client):
    client.send_raw(b'{"jsonrpc":"2.0","method":"","id":"x"}\n')
    answer = client.answer()
    assert (answer["id"], answer["error"]["code"]) == ("x", errors.INVALID_REQUEST)


def test_frames_split_anywhere_or_grouped_are_reassembled(client):
    frames = b"".join(
        json.dumps({"jsonrpc": "2.0", "method": "backend_status", "id": i}).encode()
        + b"\r\n\n" for i in range(3)
    )
    for byte in frames[:50]:
        client.send_raw(bytes([byte]))
    assert client.received() == []
    client.send_raw(frames[50:])
    assert [m["id"] for m in client.received()] == [0, 1, 2]


def test_oversized_frame_gets_an_error_then_the_connection_is_closed(client, bridge):
    calls = []
    bridge.register_method("record", lambda: calls.append(1))
    client.send_raw(b'{"x":"' + b"a" * 2000 + b'"}\n')
    error = client.answer()
    assert error["error"]["code"] == errors.FRAME_TOO_LARGE
    assert error["error"]["data"]["type"] == "FrameTooLarge"
    assert client.closed
    client.send_raw(b'{"jsonrpc":"2.0","method":"record","id":1}\n')
    assert calls == [] and client.received() == []


def test_endless_frame_without_newline_is_cut_at_the_limit(client):
    for __ in range(3):
        client.send_raw(b"a" * 500)
    assert client.answer()["error"]["code"] == errors.FRAME_TOO_LARGE
    assert client.closed


def test_hostile_client_does_not_disturb_the_others(make_client, bridge):
    bridge.register_signal("tick", "")
    good, bad = make_client(), make_client()
    good.call("subscribe")
    good.received()
    bad.send_raw(b"\x00\x01garbage\n[[[[\n")
    bad.send_raw(b"z" * 5000)
    assert bad.closed
    bridge.emit_signal("tick", n=1)
    good.call("backend_status", request_id=9)
    messages = good.received()
    assert messages[0] == {"jsonrpc": "2.0", "method": "tick", "params": {"n": 1}}
    assert messages[1]["id"] == 9 and "result" in messages[1]


# flow control


def test_slow_client_gets_its_backlog_when_it_reads_again(client, bridge):
    bridge.register_signal("tick", "")
    client.call("subscribe")
    client.received()
    client.protocol.pauseProducing()
    for n in range(5):
        bridge.emit_signal("tick", n=n)
    assert client.received() == []
    client.protocol.resumeProducing()
    assert [m["params"]["n"] for m in client.received()] == list(range(5))


def test_client_not_reading_is_dropped_once_its_buffer_is_full(make_client, bridge):
    bridge.register_signal("tick", "")
    stuck, reader = make_client(), make_client()
    for c in (stuck, reader):
        c.call("subscribe")
        c.received()
    stuck.protocol.pauseProducing()
    payload = "x" * 500
    for n in range(20):  # 20 x ~550 bytes > max_buffer (4096)
        bridge.emit_signal("tick", n=n, payload=payload)
    assert stuck.transport.disconnected  # aborted, not waiting for a flush
    assert stuck.received() == []
    assert len(reader.received()) == 20
    # what was queued for it is released at once
    assert stuck.protocol._queued_bytes == 0


def test_clients_over_the_limit_are_refused_with_an_error(factory):
    factory.max_clients = 2
    first, second = Client(factory), Client(factory)
    third = Client(factory)
    assert third.answer()["error"]["code"] == errors.TOO_MANY_CLIENTS
    assert third.closed
    assert not first.closed and not second.closed
    assert len(factory.connections) == 2


def test_lost_connection_is_forgotten_and_late_results_are_dropped(client, bridge, factory):
    pending = defer.Deferred()
    bridge.register_method("slow", lambda: pending)
    client.call("slow")
    client.protocol.connectionLost(None)
    assert client.protocol not in factory.connections
    pending.callback("late")
    assert client.received() == []


def test_invalid_params_errors_never_echo_parameter_values(client, bridge):
    def login(profile: str) -> None:
        pass

    bridge.register_method("login", login)
    client.call("login", profile="alice", password="hunter2-secret")
    error = client.answer()["error"]
    assert error["code"] == errors.INVALID_PARAMS
    assert "password" in error["message"]
    assert "hunter2" not in json.dumps(error)
