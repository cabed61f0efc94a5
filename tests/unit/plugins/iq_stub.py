"""A client stub answering IQ requests with canned XML, for the plugins' unit tests."""

from types import SimpleNamespace

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.core.xml_tools import parse_xml


class StubClient:
    """Answers IQ requests with canned XML, recording what was sent."""

    def __init__(self):
        self.profile = SimpleNamespace(name="alice")
        self.jid = JID("alice@example.org/res")
        self.sent = []
        self.answers = []

    def request(self, request):
        self.sent.append(request.toElement())
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(parse_xml(answer))


def iq_result(content: str) -> str:
    """The XML of a result IQ holding ``content``."""
    return f"<iq xmlns='jabber:client' type='result'>{content}</iq>"
