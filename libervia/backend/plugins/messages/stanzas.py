"""Message stanzas (RFC 6121 §5): what a received ``<message/>`` says, read
defensively, and the ``<message/>`` built for one to send.

What comes from the network is bounded: bodies and subjects (:data:`MAX_LANGS`
languages, ``max_body`` characters in all, cut with a flag beyond), languages, threads
and ids (an id too long is dropped, never cut: a cut id would be another one).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.exceptions import BackendError
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.xml_tools import NOT_XML_CHAR

NS_CLIENT = "jabber:client"
#: unique and stable stanza ids (XEP-0359)
NS_SID = "urn:xmpp:sid:0"
#: delayed delivery (XEP-0203)
NS_DELAY = "urn:xmpp:delay"
NS_XML = "http://www.w3.org/XML/1998/namespace"

#: the types this plugin sends and stores (``groupchat`` belongs to group chats)
TYPES = ("chat", "normal", "headline")
#: languages of bodies (and of subjects) kept per message
MAX_LANGS = 32
#: characters of a language tag
MAX_LANG = 64
#: characters of an id (message id, origin-id, stanza-id) or a thread
MAX_ID = 255


class MessageError(BackendError):
    """A message can't be sent or read; the message says why."""


class InvalidMessage(MessageError, ValueError):
    """A message to send is invalid (recipient, texts, type...), or a received one
    can't be read (its sender, its recipient)."""


class MessageCancelled(MessageError):
    """A plugin cancelled the message before it was sent (nothing was sent)."""


@dataclass
class ReadMessage:
    """What a received ``<message/>`` says, bounded (see the module documentation)."""

    #: ``None``: no ``from`` (the account itself, RFC 6120 §8.1.2.1)
    sender: jabber_jid.JID | None
    recipient: jabber_jid.JID | None
    type: str
    message_id: str | None = None
    origin_id: str | None = None
    #: the ``(by, id)`` of each stanza-id: which one to trust is the caller's decision
    stanza_ids: list[tuple[str, str]] = field(default_factory=list)
    bodies: dict[str, str] = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)
    thread: str | None = None
    thread_parent: str | None = None
    #: the XEP-0203 delay's time, when there was a valid one
    delay: datetime | None = None
    #: what was left out or cut, for the log and the stored ``extra``
    truncated: bool = False
    dropped: list[str] = field(default_factory=list)


def _lang(element: domish.Element, default: str) -> str:
    lang = element.attributes.get((NS_XML, "lang"))
    if lang is None:
        return default
    return lang[:MAX_LANG]


def _an_id(value: str | None, what: str, dropped: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_ID:
        dropped.append(f"{what} longer than {MAX_ID} characters")
        return None
    return value


def _children(element: domish.Element, uri: str, name: str) -> list[domish.Element]:
    return [c for c in element.elements() if c.name == name and c.uri == uri]


def read_message(element: domish.Element, max_body: int) -> ReadMessage:
    """Read a received ``<message/>``.

    :param max_body: characters of bodies and subjects kept, in all
    :raise InvalidMessage: its sender or recipient is not a valid JID
    """
    dropped: list[str] = []
    sender_text = element.getAttribute("from")
    sender = jid_or_none(sender_text) if sender_text is not None else None
    if sender_text is not None and sender is None:
        raise InvalidMessage(f"invalid sender {sender_text[:100]!r}")
    recipient_text = element.getAttribute("to")
    recipient = jid_or_none(recipient_text) if recipient_text is not None else None
    if recipient_text is not None and recipient is None:
        raise InvalidMessage(f"invalid recipient {recipient_text[:100]!r}")
    type_ = element.getAttribute("type") or "normal"
    read = ReadMessage(sender, recipient, type_, dropped=dropped)
    read.message_id = _an_id(element.getAttribute("id"), "message id", dropped)
    default_lang = _lang(element, "")
    left = max_body
    for name, texts in (("body", read.bodies), ("subject", read.subjects)):
        for child in _children(element, element.uri or NS_CLIENT, name):
            lang = _lang(child, default_lang)
            if lang in texts:
                dropped.append(f"a second {name} in language {lang!r}")
                continue
            if len(texts) >= MAX_LANGS:
                dropped.append(f"{name} texts in more than {MAX_LANGS} languages")
                break
            text = str(child)
            if not text:
                continue
            if not left:
                read.truncated = True
                break
            if len(text) > left:
                text = text[:left]
                read.truncated = True
            left -= len(text)
            texts[lang] = text
    thread = next(iter(_children(element, element.uri or NS_CLIENT, "thread")), None)
    if thread is not None:
        read.thread = _an_id(str(thread), "thread", dropped)
        read.thread_parent = _an_id(thread.getAttribute("parent"), "thread parent",
                                    dropped)
    origin = next(iter(_children(element, NS_SID, "origin-id")), None)
    if origin is not None:
        read.origin_id = _an_id(origin.getAttribute("id"), "origin-id", dropped)
    for stanza_id in _children(element, NS_SID, "stanza-id"):
        by, value = stanza_id.getAttribute("by"), _an_id(stanza_id.getAttribute("id"),
                                                         "stanza-id", dropped)
        if by and value:
            read.stanza_ids.append((by, value))
    delay = next(iter(_children(element, NS_DELAY, "delay")), None)
    if delay is not None:
        read.delay = parse_stamp(delay.getAttribute("stamp"))
        if read.delay is None:
            dropped.append("a delay with an invalid time")
    return read


def parse_stamp(text: str | None) -> datetime | None:
    """A XEP-0082 date and time (always with a time zone), in UTC; ``None`` if
    invalid."""
    if not text or len(text) > 64:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # out of range once in UTC: year 1 in a zone east of it, year 9999 west of it
        return stamp.astimezone(UTC) if stamp.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def checked_texts(value: Any, what: str, max_chars: int) -> dict[str, str]:
    """Bodies or subjects given by a frontend or a plugin: a text, or texts by
    language (``""``: no language said).

    :raise InvalidMessage: not text, too long, or holding what XML forbids
    """
    if value is None:
        return {}
    texts = {"": value} if isinstance(value, str) else value
    if not isinstance(texts, dict):
        raise InvalidMessage(f"the {what} must be a text, or texts by language")
    if len(texts) > MAX_LANGS:
        raise InvalidMessage(f"{len(texts)} languages for the {what}: at most {MAX_LANGS}")
    total = 0
    checked = {}
    for lang, text in texts.items():
        if not isinstance(lang, str) or not isinstance(text, str):
            raise InvalidMessage(f"the {what} must be a text, or texts by language")
        if len(lang) > MAX_LANG or NOT_XML_CHAR.search(lang) or any(
                c.isspace() for c in lang):
            raise InvalidMessage(f"invalid language tag {lang[:MAX_LANG]!r} for the "
                                 f"{what}: use one such as en or fr-CA")
        if NOT_XML_CHAR.search(text):
            raise InvalidMessage(f"the {what} holds a character XML forbids (a control "
                                 "character or a lone surrogate): remove it")
        total += len(text)
        if text:
            checked[lang] = text
    if total > max_chars:
        raise InvalidMessage(f"the {what} is {total} characters long, more than "
                             f"{max_chars} (the max_body setting): shorten it or send "
                             "it as a file")
    return checked


def build_message(to: jabber_jid.JID, type_: str, message_id: str,
                  bodies: dict[str, str], subjects: dict[str, str],
                  thread: str | None = None, thread_parent: str | None = None
                  ) -> domish.Element:
    """The ``<message/>`` to send, with its origin-id (XEP-0359): the same as its id."""
    message = domish.Element((NS_CLIENT, "message"))
    message["to"] = to.full()
    message["type"] = type_
    message["id"] = message_id
    for name, texts in (("subject", subjects), ("body", bodies)):
        for lang, text in texts.items():
            child = message.addElement(name, content=text)
            if lang:
                child[(NS_XML, "lang")] = lang
    if thread:
        child = message.addElement("thread", content=thread)
        if thread_parent:
            child["parent"] = thread_parent
    origin = message.addElement((NS_SID, "origin-id"))
    origin["id"] = message_id
    return message
