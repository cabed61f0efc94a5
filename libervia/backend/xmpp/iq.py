"""An IQ request carrying a prepared payload, as plugins send them.

``client.request(IQRequest(service, "get", payload))`` sends the IQ and fires with the
answer, or fails with the error the entity answered
(:class:`twisted.words.protocols.jabber.error.StanzaError`) or a time-out.
"""

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import generic

#: seconds to wait for an answer, unless the request says otherwise
DEFAULT_TIMEOUT = 60


class IQRequest(generic.Request):
    """An IQ get/set carrying a prepared payload element."""

    def __init__(self, recipient: jabber_jid.JID | None, stanza_type: str,
                 payload: domish.Element, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        super().__init__(recipient=recipient, stanzaType=stanza_type)
        self.payload = payload
        self.timeout = timeout

    def toElement(self) -> domish.Element:  # noqa: N802 (Wokkel API)
        element = super().toElement()
        element.addChild(self.payload)
        return element
