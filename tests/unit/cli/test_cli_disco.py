"""``li disco info`` and ``li disco items``: against a real backend whose profile is
connected through a stub stream answering the requests."""

import json

import pytest
import pytest_twisted

from libervia.cli.commands.completion import PROFILE_MARK, walk
from libervia.cli.main import build_parser
from tests.unit.cli.conftest import li_runner, started_backend
from tests.unit.plugins.disco_env import StreamClient
from tests.unit.plugins.iq_stub import iq_result

NS_INFO = "http://jabber.org/protocol/disco#info"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
PSI = iq_result(
    f"<query xmlns='{NS_INFO}'><identity category='client' type='pc' name='Psi' "
    "xml:lang='en'/><feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='urn:xmpp:microblog:0+notify'/>"
    "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
    "<value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='software'><value>Psi</value></field></x></query>")


@pytest.fixture
def disco_backend(li_env, socket_dir, tmp_path):
    yield from started_backend(socket_dir, tmp_path, ("XEP-0030",))


@pytest.fixture
def stream(disco_backend):
    """Profile ``alice``, connected through a stub stream."""
    return StreamClient(disco_backend)


@pytest.fixture
def run_li(disco_backend):
    return li_runner(disco_backend)


@pytest_twisted.ensureDeferred
async def test_disco_info_as_json_and_as_tables(run_li, stream):
    stream.answers += [PSI]
    status, out, err = await run_li("disco", "info", "-p", "alice", "bob@example.org/psi",
                                    "--output", "json")
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "jid": "bob@example.org/psi", "node": None,
        "identities": [{"category": "client", "type": "pc", "name": "Psi",
                        "lang": "en"}],
        "features": ["http://jabber.org/protocol/caps", "urn:xmpp:microblog:0+notify"],
        "forms": {"urn:xmpp:dataforms:softwareinfo": {"software": ["Psi"]}},
        "truncated": False}
    # asked again: from the backend's cache
    status, out, err = await run_li("disco", "info", "-p", "alice", "bob@example.org/psi")
    assert (status, err) == (0, "")
    assert len(stream.sent) == 1
    assert out.splitlines() == [
        "identities:",
        "CATEGORY  TYPE  LANG  NAME",
        "client    pc    en    Psi",
        "",
        "features:",
        "  http://jabber.org/protocol/caps",
        "  urn:xmpp:microblog:0+notify",
        "",
        "form urn:xmpp:dataforms:softwareinfo:",
        "FIELD     VALUE",
        "software  Psi",
    ]


@pytest_twisted.ensureDeferred
async def test_disco_items_of_a_node(run_li, stream):
    stream.answers.append(iq_result(
        f"<query xmlns='{NS_ITEMS}' node='n'><item jid='pubsub.example.org' name='PubSub'/>"
        "<item jid='example.org' node='sub'/></query>"))
    status, out, err = await run_li("disco", "items", "-p", "alice", "example.org",
                                    "-n", "n")
    assert (status, err) == (0, "")
    assert stream.sent[0].query["node"] == "n"
    assert out.splitlines() == ["JID                 NODE  NAME",
                                "pubsub.example.org        PubSub",
                                "example.org         sub"]
    stream.answers.append(iq_result(f"<query xmlns='{NS_ITEMS}'/>"))
    status, out, __ = await run_li("disco", "items", "-p", "alice", "example.org",
                                   "--output", "json")
    assert json.loads(out) == {"jid": "example.org", "node": None, "items": []}


@pytest_twisted.ensureDeferred
async def test_disco_errors_are_typed_and_exit_with_1(run_li, stream):
    from twisted.words.protocols.jabber.error import StanzaError

    stream.answers.append(StanzaError("item-not-found"))
    status, out, err = await run_li("disco", "info", "-p", "alice", "example.org",
                                    "-n", "gone", "--output", "json")
    assert status == 1
    assert json.loads(out)["error"]["type"] == "DiscoNotFound"
    status, __, err = await run_li("disco", "items", "-p", "alice", "not a jid@@")
    assert status == 1
    assert "[InvalidDiscoRequest]" in err
    status, __, err = await run_li("disco", "info", "-p", "nobody", "example.org")
    assert status == 1 and "[ProfileNotFound]" in err


def test_disco_commands_are_completed():
    tree = {path: (words, values) for path, words, values in walk(build_parser())}
    assert "disco" in tree["li"][0]
    assert {"info", "items"} <= set(tree["li disco"][0])
    for command in ("info", "items"):
        words, values = tree[f"li disco {command}"]
        assert {"-n", "--node", "-p", "--output"} <= set(words)
        assert values["-p"] == PROFILE_MARK
