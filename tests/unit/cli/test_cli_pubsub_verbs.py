"""``li pubsub watch``, ``li pubsub node list`` and ``li pubsub set`` of several items,
against a real backend whose profile alice is "connected" through a stub client
answered by a fake service (the real servers are in tests/e2e/test_li_prosody.py)."""

import io
import json
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from libervia.cli.base import CommandError, UsageError
from libervia.cli.commands.pubsub.items import items_xml
from libervia.cli.commands.pubsub.nodes import render_node_list
from libervia.cli.commands.pubsub.watch import describe
from libervia.cli.main import main
from libervia.cli.xml_format import XMLError, split_elements
from tests.unit.cli.test_cli_profile_pubsub import SECRET, Stdin
from tests.unit.plugins.fake_pubsub import FakePubsubService, StubClient


class ConnectedStub(StubClient):
    """alice's client, "connected"; its requests are answered by the fake service."""

    is_connected = True

    def info(self):
        return {"profile": self.profile.name, "state": "connected"}


@pytest.fixture
def service():
    service = FakePubsubService("ejabberd")
    service.create("blog", title="Alice's blog")
    service.create("news")
    return service


@pytest.fixture
def alice(pubsub_backend, run_li_pubsub, monkeypatch, service):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    status, __, err = pytest_twisted.blockon(run_li_pubsub(
        "profile", "create", "alice", "--jid", "alice@example.org"))
    assert status == 0, err
    client = ConnectedStub("alice", service)
    pubsub_backend.clients.clients["alice"] = client
    yield client
    pubsub_backend.clients.clients.pop("alice", None)


class InterruptedOutput(io.StringIO):
    """Standard output of li, where Ctrl-C comes once ``lines`` lines are printed, or
    once a line holds ``text``."""

    def __init__(self, lines: int | None = None, text: str | None = None) -> None:
        super().__init__()
        self.lines = lines
        self.text = text
        self.interrupted = False

    def flush(self) -> None:
        printed = self.getvalue()
        if not self.interrupted and (
                (self.lines is not None and printed.count("\n") >= self.lines)
                or (self.text is not None and self.text in printed)):
            self.interrupted = True  # one Ctrl-C
            raise KeyboardInterrupt


async def until(condition, timeout=10.0):
    for __ in range(int(timeout / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met in time")


async def watched(backend, argv, out, events):
    """Run li watch, dispatch ``events`` (notifications) once it listens; return its
    exit status, output and errors once ``out`` (an :class:`InterruptedOutput`) had it
    get Ctrl-C."""
    err = io.StringIO()
    socket_path = str(backend.getServiceNamed("bridge").path)
    done = threads.deferToThread(main, ["--socket", socket_path, "pubsub", "watch", *argv],
                                 out=out, err=err)
    await until(lambda: backend.bridge.is_wanted("pubsub_event"))
    pubsub = backend.plugins["XEP-0060"]
    client = backend.clients.clients["alice"]
    for message in events:
        await pubsub.dispatch(client, [message])
    status = await done
    return status, out.getvalue(), err.getvalue()


@pytest_twisted.ensureDeferred
async def test_watch_prints_each_event_as_a_json_line_and_ctrl_c_ends_it_cleanly(
    pubsub_backend, alice, service
):
    status, out, err = await watched(
        pubsub_backend, ["-n", "blog", "--output", "json"], InterruptedOutput(lines=5),
        [service.publish("news", "elsewhere"),  # another node: not shown
         service.publish("blog", "first"), service.retract("blog", ["first"]),
         service.configure("blog", "New title"), service.purge("blog"),
         service.delete("blog")])
    assert (status, err) == (0, "")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == [
        "items", "retract", "configuration", "purge", "delete"]
    assert all((e["profile"], e["service"], e["node"]) ==
               ("alice", "pubsub.example.org", "blog") for e in events)
    assert events[0]["item_ids"] == ["first"]
    [item] = events[0]["items"]
    assert item.startswith("<item xmlns='http://jabber.org/protocol/pubsub' id='first'>")
    assert "Entry first" in item
    assert events[1]["item_ids"] == ["first"]
    assert events[2]["options"] == {"pubsub#title": "New title"}
    assert all(e["received"].endswith("Z") for e in events)


@pytest_twisted.ensureDeferred
async def test_watch_in_text_says_what_happened_and_shows_the_items(
    pubsub_backend, alice, service
):
    status, out, err = await watched(
        pubsub_backend, ["-s", "PUBSUB.example.org"], InterruptedOutput(text="retracted"),
        [service.publish("news", "n1"), service.retract("news", ["n1", "n0"])])
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].endswith("] pubsub.example.org news: 1 item published: n1")
    assert lines[1] == "  <item xmlns=\"http://jabber.org/protocol/pubsub\" id=\"n1\">"
    assert lines[-1].endswith("] pubsub.example.org news: 2 items retracted: n1, n0")


@pytest_twisted.ensureDeferred
async def test_watch_warns_when_the_profile_is_not_connected(
    pubsub_backend, alice, service
):
    pubsub_backend.clients.clients.pop("alice")
    out, err = InterruptedOutput(lines=1), io.StringIO()
    socket_path = str(pubsub_backend.getServiceNamed("bridge").path)
    done = threads.deferToThread(main, ["--socket", socket_path, "pubsub", "watch"],
                                 out=out, err=err)
    await until(lambda: "no event comes" in err.getvalue())
    pubsub_backend.bridge.emit_signal("connection_state", profile="alice",
                                      state="connected", error=None)
    pubsub_backend.bridge.emit_signal(
        "pubsub_event", profile="alice", service="pubsub.example.org", node="x",
        type="purge")
    assert await done == 0
    assert err.getvalue().splitlines() == [
        "li: warning: profile alice is disconnected: no event comes until it is "
        "connected (li profile connect alice)",
        "li: warning: profile alice is connected"]
    assert out.getvalue().endswith("pubsub.example.org x: purged (every item retracted)\n")


@pytest.mark.parametrize(("event", "text"), [
    ({"type": "items", "item_ids": ["a"]}, "1 item published: a"),
    ({"type": "items", "item_ids": ["a", "b"]}, "2 items published: a, b"),
    ({"type": "retract", "item_ids": ["a"]}, "1 item retracted: a"),
    ({"type": "configuration", "options": None}, "configuration changed"),
    ({"type": "configuration", "options": {"pubsub#max_items": ["1", "2"]}},
     "configuration changed: pubsub#max_items=1, 2"),
    ({"type": "something-new"}, "something-new event"),
    # what a buggy or hostile backend could send: still a line, never a traceback
    ({"type": "items", "item_ids": None, "items": 5}, "0 items published"),
    ({"type": "retract", "item_ids": [None, 3]}, "1 item retracted: 3"),
])
def test_events_are_described_in_words(event, text):
    assert describe(event) == text


# li pubsub node list


@pytest_twisted.ensureDeferred
async def test_node_list_shows_the_nodes_of_the_service(run_li_pubsub, alice):
    status, out, err = await run_li_pubsub("pubsub", "node", "list", "-s",
                                           "pubsub.example.org")
    assert status == 0, err
    assert out.splitlines() == ["NODE  NAME", "blog  Alice's blog", "news", "(2 nodes)"]
    status, out, err = await run_li_pubsub("pubsub", "node", "ls", "-s",
                                           "pubsub.example.org", "--output", "json")
    assert status == 0, err
    assert json.loads(out) == [
        {"node": "blog", "name": "Alice's blog", "jid": "pubsub.example.org"},
        {"node": "news", "name": None, "jid": "pubsub.example.org"}]


@pytest_twisted.ensureDeferred
async def test_node_list_errors_are_typed(run_li_pubsub, alice):
    status, out, err = await run_li_pubsub("pubsub", "node", "list", "-s", "a@b@c",
                                           "--output", "json")
    assert status == 1
    assert json.loads(out)["error"]["type"] == "InvalidRequest"
    # a service that does not exist (the stub answers service-unavailable)
    status, __, err = await run_li_pubsub("pubsub", "node", "list", "-s", "nowhere.example")
    assert status == 1
    assert "service-unavailable" in err and "Traceback" not in err


def test_node_list_names_the_holder_only_when_it_is_another_entity():
    out = io.StringIO()
    render_node_list(SimpleNamespace(out=out), [
        {"node": "a", "name": None, "jid": "pubsub.example.org"},
        {"node": "b", "name": "B", "jid": "other.example.org"}])
    assert out.getvalue().splitlines()[0].split() == ["NODE", "JID", "NAME"]
    out = io.StringIO()
    render_node_list(SimpleNamespace(out=out), [])
    assert out.getvalue() == "(no node listed)\n"


# li pubsub set, several items


def test_several_elements_are_several_items_as_written():
    text = ('<?xml version="1.0"?>\n<item id="a"><p xmlns="urn:t">1 &lt; 2</p></item>\n'
            '<!-- a comment -->\n<item xmlns="http://jabber.org/protocol/pubsub" id="b"/>'
            '<entry xmlns="http://www.w3.org/2005/Atom"><title>é</title></entry>')
    assert items_xml(text, None) == [
        '<item id="a"><p xmlns="urn:t">1 &lt; 2</p></item>',
        '<item xmlns="http://jabber.org/protocol/pubsub" id="b"/>',
        '<entry xmlns="http://www.w3.org/2005/Atom"><title>é</title></entry>']
    # one element: -i applies, as before
    assert items_xml("<p xmlns='urn:t'/>", "x") == [
        "<item xmlns=\"http://jabber.org/protocol/pubsub\" id=\"x\"><p xmlns='urn:t'/></item>"]


@pytest.mark.parametrize(("text", "item_id", "error", "message"), [
    ("<a/><b/>", "x", UsageError, "-i names one item, and 2 are given"),
    ("", None, CommandError, "no XML given"),
    ("  \n ", None, CommandError, "no XML given"),
    ("<a/> text <b/>", None, CommandError, "text outside of an element at line 1"),
    ("<a/>\n<b>", None, CommandError, "ends before an element is closed"),
    ("<a/>\n<b></c>", None, CommandError, "line 2"),
    ("<item id='1'/><item id='2' id='3'/>", None, CommandError, "not well-formed"),
    ("<!DOCTYPE x [<!ENTITY e 'x'>]><a>&e;</a>", None, CommandError, "not well-formed"),
])
def test_bad_item_files_are_refused_before_anything_is_sent(text, item_id, error,
                                                             message):
    with pytest.raises(error, match=message):
        items_xml(text, item_id)


def test_split_keeps_each_element_whole():
    deep = "<a>" * 50 + "</a>" * 50
    assert split_elements(f"{deep}\n{deep}") == [deep, deep]
    with pytest.raises(XMLError):
        split_elements("</li-elements><x>")


@pytest_twisted.ensureDeferred
async def test_set_publishes_several_items_in_one_call(run_li_pubsub, pubsub_backend,
                                                       alice, monkeypatch, tmp_path):
    items = tmp_path / "items.xml"
    items.write_text("<item id='one'><entry xmlns='http://www.w3.org/2005/Atom'>"
                     "<title>One</title></entry></item>\n"
                     "<entry xmlns='http://www.w3.org/2005/Atom'><title>Two</title></entry>\n")
    calls = []

    async def publish(client, service, node, elements, options=None):
        calls.append((service, node, [e.toXml() for e in elements]))
        return [e.getAttribute("id") or "chosen-by-service" for e in elements]

    monkeypatch.setattr(pubsub_backend.plugins["XEP-0060"], "publish", publish)
    status, out, err = await run_li_pubsub("pubsub", "set", "-s", "pubsub.example.org",
                                           "-n", "news", str(items))
    assert status == 0, err
    [(service, node, published)] = calls  # one bridge call for both
    assert (service, node) == ("pubsub.example.org", "news")
    assert len(published) == 2
    assert "id='one'" in published[0] and "<title>Two</title>" in published[1]
    assert out == "published items one, chosen-by-service\n"
