"""Roster stanzas (RFC 6121 §2): items read from what the server sends, and built for
what the profile asks.

What the server sends is read defensively: an item without a valid JID is left out,
an unknown subscription is ``none``, names and groups are bounded.
"""

from twisted.words.xish import domish

from libervia.backend.core.exceptions import BackendError
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.xml_tools import NOT_XML_CHAR
from libervia.backend.memory.storage import SUBSCRIPTIONS, RosterEntry

NS_ROSTER = "jabber:iq:roster"
#: the stream feature of servers that version rosters (XEP-0237)
NS_ROSTER_VER = "urn:xmpp:features:rosterver"

#: characters kept of a contact's name and of a group name
MAX_NAME = 1023
#: groups kept per contact
MAX_GROUPS = 64
#: contacts kept of a roster the server sends
MAX_ITEMS = 20_000


class RosterError(BackendError):
    """A roster request is invalid, or the server refused it; the message says why."""


class InvalidRoster(RosterError, ValueError):
    """A JID, name or group given to a roster method is invalid."""


def contact_jid(text: str) -> str:
    """The bare JID of a contact given by a frontend or a plugin.

    :raise InvalidRoster: not a JID, or a full one (the roster holds bare JIDs)
    """
    parsed = jid_or_none(text) if isinstance(text, str) else None
    if parsed is None:
        raise InvalidRoster(f"invalid JID {str(text)[:100]!r}: give a bare JID, "
                            "such as contact@example.org")
    if parsed.resource is not None:
        raise InvalidRoster(f"{text[:100]!r} is a full JID: the roster holds bare JIDs "
                            "(leave out the /resource)")
    return parsed.full()


def checked_text(value: str | None, what: str) -> str | None:
    """A name or group given to a roster method, checked.

    :raise InvalidRoster: too long, or holding what XML forbids
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRoster(f"the {what} must be text")
    if len(value) > MAX_NAME:
        raise InvalidRoster(f"the {what} is {len(value)} characters long, more than "
                            f"{MAX_NAME}: shorten it")
    if NOT_XML_CHAR.search(value):
        raise InvalidRoster(f"the {what} holds a character XML forbids (a control "
                            "character or a lone surrogate): remove it")
    return value


def checked_groups(groups: list[str] | None) -> tuple[str, ...]:
    """Groups given to a roster method: each checked, duplicates and empty ones left
    out, in their order.

    :raise InvalidRoster: too many, or one is invalid
    """
    if not groups:
        return ()
    if len(groups) > MAX_GROUPS:
        raise InvalidRoster(f"{len(groups)} groups: at most {MAX_GROUPS}")
    kept: dict[str, None] = {}
    for group in groups:
        group = checked_text(group, "group name")
        if group:
            kept[group] = None
    return tuple(kept)


def parse_item(item: domish.Element) -> RosterEntry | None:
    """A roster item as the server sent it (``None`` if its JID is invalid); the
    ``remove`` subscription of a push is read as ``none``: see :func:`is_removal`."""
    parsed = jid_or_none(item.getAttribute("jid"))
    if parsed is None or parsed.resource is not None:
        return None
    subscription = item.getAttribute("subscription") or "none"
    if subscription not in SUBSCRIPTIONS:
        subscription = "none"
    name = item.getAttribute("name") or None
    groups: dict[str, None] = {}
    for group in item.elements(NS_ROSTER, "group"):
        text = str(group)[:MAX_NAME]
        if text and len(groups) < MAX_GROUPS:
            groups[text] = None
    return RosterEntry(parsed.full(), name[:MAX_NAME] if name else None, subscription,
                       item.getAttribute("ask") == "subscribe", tuple(groups))


def is_removal(item: domish.Element) -> bool:
    """The item of a push says the contact was removed."""
    return item.getAttribute("subscription") == "remove"


def roster_query(version: str | None = None) -> domish.Element:
    """The ``<query/>`` of a roster get (with ``ver`` when versioning is used)."""
    query = domish.Element((NS_ROSTER, "query"))
    if version is not None:
        query["ver"] = version
    return query


def item_query(jid: str, name: str | None = None, groups: tuple[str, ...] = (),
               remove: bool = False) -> domish.Element:
    """The ``<query/>`` of a roster set: one item added, changed or removed."""
    query = domish.Element((NS_ROSTER, "query"))
    item = query.addElement("item")
    item["jid"] = jid
    if remove:
        item["subscription"] = "remove"
        return query
    if name:
        item["name"] = name
    for group in groups:
        item.addElement("group", content=group)
    return query
