"""JIDs parsed once per text."""

import pytest
from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from libervia.backend.core.jids import parse_jid


def test_a_text_parsed_again_gives_the_same_jid_object():
    first = parse_jid("Pubsub.Example.org")
    assert first == JID("pubsub.example.org") and first.full() == "pubsub.example.org"
    assert parse_jid("Pubsub.Example.org") is first


def test_an_invalid_jid_raises_every_time():
    for __ in range(2):
        with pytest.raises(InvalidFormat):
            parse_jid("a@b@c")
