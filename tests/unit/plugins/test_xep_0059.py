"""XEP-0059 (RSM): parsing and building request and response sets."""

import pytest
from twisted.words.xish import domish

from libervia.backend.plugins.plugin_xep_0059 import (
    NS_RSM,
    XEP_0059,
    RSMError,
    RSMRequest,
    RSMResponse,
    find_set,
)


def parse_xml(xml: str) -> domish.Element:
    from twisted.words.xish.domish import elementStream

    roots = []
    stream = elementStream()
    stream.DocumentStartEvent = roots.append
    stream.ElementEvent = lambda e: roots[0].addChild(e)
    stream.DocumentEndEvent = lambda: None
    stream.parse(xml.encode())
    return roots[0]


def test_request_round_trip_through_xml():
    for request in (RSMRequest(max=10), RSMRequest(max=5, after="item-9"),
                    RSMRequest(max=5, before=""), RSMRequest(max=3, index=40),
                    RSMRequest(before="item-2")):
        assert RSMRequest.from_element(request.to_element()) == request


def test_empty_before_asks_for_the_last_page():
    elt = RSMRequest(max=10, before="").to_element()
    before = next(elt.elements(NS_RSM, "before"))
    assert str(before) == ""
    assert RSMRequest.from_element(elt).before == ""


def test_parse_request_from_the_xep_example():
    set_elt = parse_xml(
        "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max>"
        "<after>peterpan@neverland.lit</after></set>"
    )
    assert RSMRequest.from_element(set_elt) == RSMRequest(max=10, after="peterpan@neverland.lit")


def test_response_round_trip_and_dict():
    response = RSMResponse(first="a", last="z", index=20, count=800)
    elt = response.to_element()
    assert next(elt.elements(NS_RSM, "first"))["index"] == "20"
    assert RSMResponse.from_element(elt) == response
    assert response.to_dict() == {"first": "a", "last": "z", "index": 20, "count": 800}
    assert RSMResponse(count=0).to_dict() == {"count": 0}


@pytest.mark.parametrize(
    ("data", "message"),
    [({"max": -1}, "negative"), ({"max": "ten"}, "integer"),
     ({"after": "a", "before": "b"}, "only one"), ({"index": 2, "after": "x"}, "only one"),
     ({"page": 2}, "unknown")],
)
def test_invalid_requests_are_refused(data, message):
    with pytest.raises(RSMError, match=message):
        RSMRequest.from_dict(data)


def test_invalid_count_in_a_response_is_refused():
    set_elt = parse_xml("<set xmlns='http://jabber.org/protocol/rsm'><count>many</count></set>")
    with pytest.raises(RSMError, match="count"):
        RSMResponse.from_element(set_elt)


def test_find_set():
    parent = domish.Element(("http://jabber.org/protocol/pubsub", "pubsub"))
    assert find_set(parent) is None
    parent.addChild(RSMRequest(max=1).to_element())
    assert find_set(parent) is not None


@pytest.mark.parametrize(
    ("response", "received", "expected"),
    [
        (RSMResponse(first="a", last="j", index=0, count=25), 10, RSMRequest(max=10, after="j")),
        (RSMResponse(first="u", last="y", index=20, count=25), 5, None),  # count reached
        (RSMResponse(), 1000, None),  # server ignoring RSM: everything came at once
        (RSMResponse(first="a", last="j"), 0, None),  # empty page
        (RSMResponse(first="a", last="j"), 10, RSMRequest(max=10, after="j")),  # no count
    ],
)
def test_next_request_is_decided_from_the_answer(response, received, expected):
    plugin = XEP_0059(host=None)
    assert plugin.next_request(RSMRequest(max=10), response, received) == expected
