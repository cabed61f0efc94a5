"""JIDs parsed once: the same texts come with every request and every notification.

Parsing a JID applies stringprep to each of its parts (Twisted's ``JID``), which costs
more than answering a request from the cache.  :func:`parse_jid` keeps the JIDs of the
texts seen last; a :class:`~twisted.words.protocols.jabber.jid.JID` is never changed
once made, so one object may serve every caller.
"""

from functools import lru_cache

from twisted.words.protocols.jabber import jid as jabber_jid

#: distinct texts kept
CACHE_SIZE = 4096


@lru_cache(maxsize=CACHE_SIZE)
def parse_jid(text: str) -> jabber_jid.JID:
    """The JID of ``text`` (an invalid one raises each time it is asked).

    :raise twisted.words.protocols.jabber.jid.InvalidFormat: not a JID
    """
    return jabber_jid.JID(text)
