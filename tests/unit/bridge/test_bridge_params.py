"""Parameters of bridge methods are checked against the method's type hints.

Each call is checked before the method runs: a wrong type answers ``InvalidParams``
naming the parameter; a method whose hints can't be checked is refused when it is
registered.
"""

import json
from typing import Annotated, Any, Literal, Optional, Union

import pytest

from libervia.backend.bridge import errors
from libervia.backend.bridge.params import UncheckableSignature, checker_for, parameters_of
from libervia.backend.bridge.protocol import BridgeProtocol


def typed(
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    maybe: str | None,
    ids: list[str] | None = None,
    options: dict[str, Any] | None = None,
    anything: Any = None,
    mode: Literal["a", "b", 1] = "a",
    old_style: Optional[int] = None,  # noqa: UP045 (the old spelling is supported too)
    union: Union[int, str] = 0,  # noqa: UP007
    annotated: Annotated[int, "doc"] = 0,
    nested: dict[str, list[int]] | None = None,
    bare_list: list | None = None,
    bare_dict: dict | None = None,
) -> None:
    """A method declaring every supported kind of hint."""


PARAMS = parameters_of("typed", typed)
GOOD = {"text": "t", "count": 1, "ratio": 0.5, "flag": True, "maybe": None}


def refusal(**params: Any) -> str | None:
    """The InvalidParams message for ``params`` over GOOD, or None if they are valid."""
    try:
        PARAMS.check(GOOD | params)
    except errors.InvalidParams as e:
        return str(e)
    return None


@pytest.mark.parametrize("params", [
    {},
    {"ratio": 2},  # an integer is a number
    {"maybe": "x"},
    {"ids": ["a", "b"]}, {"ids": []}, {"ids": None},
    {"options": {"a": [1, {"b": None}]}},
    {"anything": [1, "a", None, {"x": 1.5}]},
    {"mode": "b"}, {"mode": 1},
    {"old_style": None}, {"old_style": 3},
    {"union": "x"}, {"union": 2},
    {"annotated": 5},
    {"nested": {"a": [1, 2]}},
    {"bare_list": [1, "x"]}, {"bare_dict": {"k": [None]}},
    {"count": 2**64},  # the type is right: whether it is usable is the method's concern
    {"text": "\x00\x01 é€𝄞 \ufffe"},  # whether a method can use it is its own concern
])
def test_well_typed_values_are_accepted(params):
    assert refusal(**params) is None


@pytest.mark.parametrize(("params", "message"), [
    ({"text": None}, 'parameter "text" must be a string, not null'),
    ({"text": 0}, 'parameter "text" must be a string, not an integer'),
    ({"text": []}, 'parameter "text" must be a string, not an array'),
    ({"count": True}, 'parameter "count" must be an integer, not a boolean'),
    ({"count": 1.0}, 'parameter "count" must be an integer, not a number'),
    ({"count": "1"}, 'parameter "count" must be an integer, not a string'),
    ({"ratio": False}, 'parameter "ratio" must be a number, not a boolean'),
    ({"flag": 1}, 'parameter "flag" must be a boolean, not an integer'),
    ({"flag": "true"}, 'parameter "flag" must be a boolean, not a string'),
    ({"maybe": 0}, 'parameter "maybe" must be a string or null, not an integer'),
    ({"ids": 1.5}, 'parameter "ids" must be an array of strings or null, not a number'),
    ({"ids": True}, 'parameter "ids" must be an array of strings or null, not a boolean'),
    ({"ids": "a"}, 'parameter "ids" must be an array of strings or null, not a string'),
    ({"ids": ["a", 2]}, '"ids"[1] (in parameter "ids") must be a string, not an integer'),
    ({"options": []}, 'parameter "options" must be an object or null, not an array'),
    ({"mode": "c"}, 'parameter "mode" must be one of "a", "b", 1, not a string'),
    ({"mode": True}, 'parameter "mode" must be one of "a", "b", 1, not a boolean'),
    ({"mode": 1.0}, 'parameter "mode" must be one of "a", "b", 1, not a number'),
    ({"union": None}, 'parameter "union" must be an integer or a string, not null'),
    ({"nested": {"k": [1, "x"]}},
     '"nested"["k"][1] (in parameter "nested") must be an integer, not a string'),
])
def test_wrong_types_are_refused_naming_the_parameter(params, message):
    assert refusal(**params) == f"typed: {message}"


def test_missing_and_unknown_parameters_are_named():
    assert refusal(z=1) == (
        'typed: unknown parameter "z" (parameters: text, count, ratio, flag, maybe, ids, '
        "options, anything, mode, old_style, union, annotated, nested, bare_list, "
        "bare_dict)")
    with pytest.raises(errors.InvalidParams, match='missing parameter "count", "maybe"'):
        PARAMS.check({"text": "t", "ratio": 1, "flag": False})


def test_names_a_frontend_made_up_are_escaped_and_cut_in_messages():
    long_name = "\x00" + "k" * 500
    message = refusal(**{long_name: 1})
    assert "\x00" not in message and "\\x00" in message and len(message) < 400
    nested = refusal(nested={"\x00": ["x"]})
    assert '"nested"["\\x00"][0]' in nested
    many = refusal(**{f"z{n}": 1 for n in range(8)})
    assert '"z4" (and 3 more)' in many


@pytest.mark.parametrize(("params", "message"), [
    ({"text": "a\ud800b"}, 'parameter "text" must be a string of Unicode characters, '
     "not a string holding a lone surrogate"),
    ({"ids": ["ok", "\udfff"]}, '"ids"[1] (in parameter "ids") must be a string of '
     "Unicode characters, not a string holding a lone surrogate"),
    ({"anything": {"k": [{"\ud800x": 1}]}}, '"anything"["k"][0]["\\ud800x"] (in '
     'parameter "anything") must be a string of Unicode characters'),
    ({"options": {"a": "\udbff"}}, '"options"["a"] (in parameter "options") must be a '
     "string of Unicode characters"),
])
def test_lone_surrogates_are_refused_at_any_depth(params, message):
    # JSON can escape them, but they are not characters: UTF-8 (the database, the logs)
    # and XML (stanzas) can't carry them
    assert message in refusal(**params)


def test_surrogate_pairs_are_characters():
    assert refusal(text=json.loads('"\\ud834\\udd1e"')) is None  # 𝄞


def test_messages_never_echo_values():
    message = refusal(text=["hunter2-secret"], ids=["a", ["hunter2-secret"]])
    assert message is not None and "hunter2" not in message


def plain(a: int) -> None:
    pass


def no_hint(a) -> None:  # noqa: ANN001 (the point of the test)
    pass


def variadic(*args: int) -> None:
    pass


def keywords(**kwargs: int) -> None:
    pass


def positional(a: int, /) -> None:
    pass


def tuple_hint(a: tuple[int, int]) -> None:
    pass


def int_keys(a: dict[int, str]) -> None:
    pass


def a_class(a: BridgeProtocol) -> None:
    pass


def unresolved(a: "NoSuchName") -> None:  # noqa: F821 (the point of the test)
    pass


@pytest.mark.parametrize(("func", "message"), [
    (no_hint, "parameter 'a' has no type hint"),
    (variadic, r"\*args or \*\*args can't be checked: declare each parameter"),
    (keywords, r"\*kwargs or \*\*kwargs can't be checked"),
    (positional, "parameter 'a' is positional only"),
    (tuple_hint, r"parameter 'a': tuple\[int, int\] can't be checked against JSON values"),
    (int_keys, r"JSON object keys are strings, use dict\[str, ...\]"),
    (a_class, "BridgeProtocol.* can't be checked against JSON values"),
    (unresolved, "its type hints can't be resolved .*NoSuchName"),
])
def test_uncheckable_methods_are_refused_at_registration(bridge, func, message):
    with pytest.raises(UncheckableSignature, match=message) as raised:
        bridge.register_method("uncheckable", func)
    assert "'uncheckable'" in str(raised.value)
    assert "uncheckable" not in bridge.methods


def test_literal_of_other_values_is_refused():
    with pytest.raises(UncheckableSignature, match="Literal values"):
        checker_for(Literal[1.5])


def test_connection_is_not_a_checked_parameter_and_must_be_declared(bridge):
    def who(connection: "BridgeProtocol", name: str) -> None:
        pass

    bridge.register_method("who", who, with_connection=True)
    assert list(bridge.methods["who"].parameters.parameters) == ["name"]
    with pytest.raises(UncheckableSignature, match="no \"connection\" parameter"):
        bridge.register_method("who2", plain, with_connection=True)


def test_a_wrong_type_answers_invalid_params_before_the_method_runs(client, bridge):
    calls = []

    def retract(node: str, item_ids: list[str]) -> None:
        calls.append(item_ids)

    bridge.register_method("retract", retract)
    client.call("retract", request_id=1, node="n", item_ids=1.5)
    client.call("retract", request_id=2, node="n", item_ids=["a", True])
    client.call("retract", request_id=3, node="n", item_ids=["a"])
    answers = client.received()
    assert [a["error"]["data"]["type"] for a in answers[:2]] == ["InvalidParams"] * 2
    assert [a["error"]["code"] for a in answers[:2]] == [errors.INVALID_PARAMS] * 2
    assert answers[0]["error"]["message"] == (
        'retract: parameter "item_ids" must be an array of strings, not a number')
    assert answers[1]["error"]["message"] == (
        'retract: "item_ids"[1] (in parameter "item_ids") must be a string, '
        "not a boolean")
    assert answers[2] == {"jsonrpc": "2.0", "result": None, "id": 3}
    assert calls == [["a"]]


def test_subscribe_takes_a_list_of_names_or_a_star(client):
    client.call("subscribe", request_id=1, signals="*")
    client.call("subscribe", request_id=2, signals="backend_status")
    answers = client.received()
    assert answers[0]["result"] == "*"
    assert answers[1]["error"]["message"] == (
        'subscribe: parameter "signals" must be an array of strings or one of "*" or '
        "null, not a string")


@pytest.mark.parametrize(("params", "message"), [
    ({"jid": None}, 'parameter "jid" must be a string, not null'),
    ({"jid": 0}, 'parameter "jid" must be a string, not an integer'),
    ({"jid": []}, 'parameter "jid" must be a string, not an array'),
    ({"host": 0}, 'parameter "host" must be a string or null, not an integer'),
    ({"port": "5222"}, 'parameter "port" must be an integer or null, not a string'),
    ({"port": 5222.0}, 'parameter "port" must be an integer or null, not a number'),
    ({"direct_tls": 1}, 'parameter "direct_tls" must be a boolean, not an integer'),
    ({"mechanisms": 1.5}, 'parameter "mechanisms" must be an array of strings or null, '
     "not a number"),
    ({"mechanisms": ["PLAIN", 1]}, '"mechanisms"[1] (in parameter "mechanisms") must '
     "be a string, not an integer"),
])
def test_profile_create_with_wrong_types_answers_invalid_params(client, params, message):
    good = {"name": "bob", "jid": "bob@example.org", "password": "pencil"}
    client.call("profile_create", **(good | params))
    error = client.answer()["error"]
    assert (error["code"], error["data"]["type"]) == (errors.INVALID_PARAMS,
                                                       "InvalidParams")
    assert error["message"] == f"profile_create: {message}"



@pytest.mark.parametrize(("ca_file", "message"), [
    ("x" * 300, "File name too long"),  # one name of a path is 255 bytes at most
    ("~no-such-user-here/ca.pem", "Could not determine home directory"),
])
def test_profile_create_with_a_ca_file_no_system_can_open_is_a_profile_error(
        client, ca_file, message):
    # found by test_bridge_fuzz: it was an OSError
    client.call("profile_create", name="bob", jid="bob@example.org", password="pencil",
                ca_file=ca_file)
    error = client.answer()["error"]
    assert error["data"]["type"] == "ProfileError" and message in error["message"]


@pytest.mark.parametrize("jid", ["", "   "])
def test_profile_create_with_an_empty_jid_is_a_profile_error(client, jid):
    # found by test_bridge_fuzz: Twisted's JID("") raises a RuntimeError
    client.call("profile_create", name="bob", jid=jid, password="pencil")
    error = client.answer()["error"]
    assert error["data"]["type"] == "ProfileError" and "invalid JID" in error["message"]
