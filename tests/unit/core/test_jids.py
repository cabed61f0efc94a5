"""JIDs parsed once per text."""

import pytest
from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from libervia.backend.core.jids import InvalidJID, jid_or_none, parse_jid


def test_a_text_parsed_again_gives_the_same_jid_object():
    first = parse_jid("Pubsub.Example.org")
    assert first == JID("pubsub.example.org") and first.full() == "pubsub.example.org"
    assert parse_jid("Pubsub.Example.org") is first


def test_an_invalid_jid_raises_every_time():
    for __ in range(2):
        with pytest.raises(InvalidFormat):
            parse_jid("a@b@c")


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("@example.org", "empty local part"),
    ("a@example.org/", "empty resource"),
    ("a@", "Server address required"),
    ("a@b@c", "Invalid character"),
    # Twisted's nameprep raises IndexError on an empty label: each parser of the
    # backend used to let it through to the stanza's handler
    ("a@example..org", "empty label"),
    (".", "empty label"),
    ("a\x00@example.org", "XML forbids"),
    ("a@example.org/\ud800", "XML forbids"),
    ("a@" + "b" * 1024, "domain is longer than 1023 octets"),
    ("a@example.org/" + "\u00e9" * 512, "resource is longer than 1023 octets"),
    ("x" * 10_000, "more than a JID may have"),
    (5, "not text"),
    (None, "not text"),
])
def test_what_rfc_7622_forbids_is_refused_with_the_reason(text, why):
    with pytest.raises(InvalidJID, match=why):
        parse_jid(text)
    assert jid_or_none(text) is None


@pytest.mark.parametrize("text, full", [
    ("Bob@Example.ORG/Phone", "bob@example.org/Phone"),
    ("example.org", "example.org"),
    ("a@example.org/r/with/slashes", "a@example.org/r/with/slashes"),
    ("a@example.org/" + "r" * 1023, "a@example.org/" + "r" * 1023),
])
def test_valid_jids_are_normalised(text, full):
    assert parse_jid(text).full() == full == jid_or_none(text).full()


def test_a_stanza_without_the_attribute_gives_none():
    assert jid_or_none(None) is None and jid_or_none("") is None
