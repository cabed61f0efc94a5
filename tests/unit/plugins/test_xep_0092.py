"""XEP-0092 client: the software an entity names, whatever it sends."""

import pytest
import pytest_twisted
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.plugins.plugin_xep_0092 import NS_VERSION, XEP_0092, SoftwareVersion
from tests.unit.plugins.iq_stub import StubClient, iq_result

SERVER = JID("example.org")


@pytest.fixture
def version():
    return XEP_0092(host=None)


@pytest_twisted.ensureDeferred
async def test_get_version_asks_the_entity_and_reads_each_part(version):
    client = StubClient()
    client.answers.append(iq_result(
        f"<query xmlns='{NS_VERSION}'><name> ejabberd </name><version>23.01</version>"
        "<os>Linux</os></query>"))
    answer = await version.get_version(client, SERVER)
    assert client.sent[0]["to"] == "example.org" and client.sent[0].query.uri == NS_VERSION
    assert answer == SoftwareVersion("ejabberd", "23.01", "Linux")


@pytest.mark.parametrize(("answer", "expected"), [
    ("", SoftwareVersion(None)),
    (f"<query xmlns='{NS_VERSION}'/>", SoftwareVersion(None)),
    (f"<query xmlns='{NS_VERSION}'><name>  </name><os/></query>", SoftwareVersion(None)),
    ("<query xmlns='urn:other'><name>x</name></query>", SoftwareVersion(None)),
    (f"<query xmlns='{NS_VERSION}'><name><b>x</b></name><version>1</version></query>",
     SoftwareVersion(None, "1")),
])
@pytest_twisted.ensureDeferred
async def test_get_version_tolerates_what_entities_send(version, answer, expected):
    client = StubClient()
    client.answers.append(iq_result(answer))
    assert await version.get_version(client, SERVER) == expected


@pytest_twisted.ensureDeferred
async def test_an_entity_that_does_not_tell_answers_an_error(version):
    client = StubClient()
    client.answers.append(jabber_error.StanzaError("service-unavailable"))
    with pytest.raises(jabber_error.StanzaError):
        await version.get_version(client, SERVER)
