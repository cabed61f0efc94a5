"""``li`` alone, from ``profile create`` to a cached node query, against a local Prosody.

The backend is started by twistd with a temporary configuration; every step is a
``li`` command, as the README's "Using li" walkthrough tells a new user.
"""

import json
import re
import time

import pytest

pytest.importorskip("slixmpp")

from tests.contact import Contact  # noqa: E402 - only once slixmpp is known there

pytestmark = pytest.mark.e2e

#: the node a blog lives in (XEP-0277), on the profile's own account (PEP)
BLOG_NODE = "urn:xmpp:microblog:0"
ATOM = "http://www.w3.org/2005/Atom"


def entry(title: str) -> str:
    return f'<entry xmlns="{ATOM}"><title>{title}</title><content>{title}!</content></entry>'


def poll(condition, timeout=15.0, interval=0.05):
    """Wait until ``condition()`` is true; return whether it became so in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def cache_state(li, node=BLOG_NODE):
    result = li("pubsub", "cache", "state", "-n", node, "--output", "json")
    return json.loads(result.stdout) if result.returncode == 0 else {}


def create_profile(li, server, name="alice", user=None):
    user = user or server.user(0)
    result = li(
        "profile", "create", name, "--jid", user.jid, "--host", "127.0.0.1",
        "--port", str(server.c2s_port), "--ca-file", str(server.ca_file),
        "--output", "json", input=user.password + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert user.password not in result.stdout + result.stderr
    return user, json.loads(result.stdout)


def roster_entry(li, jid):
    return next((e for e in li.json("roster", "list") if e["jid"] == jid), None)


def roster_and_presence_steps(li, user, contact):
    added = li.json("roster", "add", contact.jid, "--name", "Bob", "--group", "Friends")
    assert (added["name"], added["groups"]) == ("Bob", ["Friends"])
    assert poll(lambda: contact.presence_from(user.jid, "subscribe"))
    # bob accepts, and asks the same
    contact.send_presence(pto=user.jid, ptype="subscribed")
    contact.send_presence(pto=user.jid, ptype="subscribe")
    assert poll(lambda: li.json("roster", "pending") != [])
    pending = li("roster", "pending")
    assert pending.returncode == 0, pending.stderr
    assert pending.stdout.split()[:3] == ["JID", "RECEIVED", "MESSAGE"]
    assert pending.stdout.splitlines()[1].startswith(contact.jid)
    accepted = li("roster", "accept", contact.jid)
    assert accepted.stdout == f"{contact.jid} accepted\n", accepted.stderr
    assert li.json("roster", "pending") == []
    assert poll(lambda: (roster_entry(li, contact.jid) or {}).get("subscription")
                == "both")
    listing = li("roster", "list")
    assert listing.stdout.splitlines()[1].split()[:5] == [
        contact.jid, "Bob", "Friends", "both", "ways"]
    # new groups; the name is kept (not given), the subscription untouched
    updated = li.json("roster", "update", contact.jid, "--group", "Friends",
                      "--group", "Chess")
    assert (updated["name"], updated["groups"], updated["subscription"]) == (
        "Bob", ["Friends", "Chess"], "both")
    renamed = li("roster", "update", contact.jid, "--name", "Bobby")
    said, groups = renamed.stdout.rstrip("\n").split("; groups: ")
    assert said == f"{contact.jid} updated; name: Bobby", renamed.stderr
    assert sorted(groups.split(", ")) == ["Chess", "Friends"]
    # (the server's push may give the groups in another order: they are a set)
    assert poll(lambda: sorted((roster_entry(li, contact.jid) or {}).get("groups") or [])
                == ["Chess", "Friends"])
    assert roster_entry(li, contact.jid)["name"] == "Bobby"

    # presence, both ways
    own = li.json("presence", "set", "--show", "away", "--status", "at lunch")
    assert own == {"show": "away", "status": "at lunch", "priority": 0}
    assert poll(lambda: contact.presence_from(user.jid, show="away"))
    contact.send_presence(pshow="dnd", pstatus="in a meeting")
    assert poll(lambda: "dnd: in a meeting" in li("presence", "get", contact.jid).stdout)
    shown = li("presence", "get", contact.jid).stdout.splitlines()
    assert shown[0] == "own presence: away: at lunch"
    assert shown[2].startswith(contact.jid + "/") and shown[2].endswith(
        "dnd: in a meeting")
    # back to available; bob stays in the roster until the end of the walkthrough
    li.json("presence", "set")


def messaging_steps(li, user, contact):
    sent = li("message", "send", contact.jid, "Lunch at noon?")
    assert sent.returncode == 0, sent.stderr
    uid = sent.stdout.strip()
    assert poll(lambda: any(body == "Lunch at noon?" for __, body, __ in contact.messages))
    contact.send_message(user.jid, "Yes, lunch at noon")
    assert poll(lambda: len(li.json("message", "history", contact.jid)) == 2)
    history = li("message", "history", contact.jid)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].endswith(f"> {contact.jid}: Lunch at noon?")
    assert lines[1].endswith(f"< {contact.jid}: Yes, lunch at noon")
    assert li.json("message", "history", contact.jid)[0]["uid"] == uid
    found = li.json("message", "history", "-f", "lunch")
    assert [m["body"] for m in found] == ["Lunch at noon?", "Yes, lunch at noon"]


def test_li_walkthrough_from_profile_to_cached_blog(
    backend_process, li, prosody_server, tmp_path
):
    user, created = create_profile(li, prosody_server)
    assert created["name"] == "alice"
    assert created["jid"] == user.jid
    assert created["options"]["port"] == prosody_server.c2s_port
    assert created["options"]["ca_file"] == str(prosody_server.ca_file)
    assert [(p["name"], p["state"]) for p in li.json("profile", "list")] == [
        ("alice", "disconnected")]

    connection = li.json("profile", "connect", "alice")
    assert connection["state"] == "connected"
    assert connection["sasl_mechanism"].startswith("SCRAM-SHA-")
    assert connection["tls_version"] == "TLSv1.3"

    info = li("profile", "info", "alice")
    assert info.returncode == 0, info.stderr
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in info.stdout.splitlines())
    assert fields["JID"] == user.jid
    assert fields["state"] == "connected"
    assert fields["SASL mechanism"] == connection["sasl_mechanism"]
    assert fields["TLS version"] == "TLSv1.3"
    assert "downgrade protection" in fields and "channel binding" in fields

    # service discovery of the account's server
    server = li.json("disco", "info", prosody_server.host)
    assert "http://jabber.org/protocol/disco#info" in server["features"]
    assert {"category": "server", "type": "im"} in [
        {k: i[k] for k in ("category", "type")} for i in server["identities"]]
    services = li("disco", "items", prosody_server.host)
    assert services.returncode == 0, services.stderr
    assert prosody_server.pubsub_service in services.stdout

    # contacts: alice and bob (an independent client) subscribe to each other
    contact = Contact(prosody_server, prosody_server.user(1))
    contact.start()
    try:
        roster_and_presence_steps(li, user, contact)
        messaging_steps(li, user, contact)
    finally:
        contact.close()

    # a blog on the profile's own account; -p is not needed: there is one profile
    created = li.json("pubsub", "node", "create", "-n", BLOG_NODE,
                      "-O", "pubsub#max_items=max", "-O", "pubsub#access_model=open")
    assert created == {"node": BLOG_NODE, "created": True}
    listed = li("pubsub", "node", "list")
    assert listed.returncode == 0, listed.stderr
    assert BLOG_NODE in listed.stdout.split()
    published = li.json("pubsub", "set", "-n", BLOG_NODE, "-i", "first",
                        input=entry("first post"))
    assert published["item_ids"] == ["first"]
    post = tmp_path / "second.xml"
    post.write_text('<?xml version="1.0"?>\n' + entry("second post"))
    assert li.json("pubsub", "set", "-n", BLOG_NODE, "-i", "second",
                   str(post))["item_ids"] == ["second"]
    third = li("pubsub", "set", "-p", "alice", "-n", BLOG_NODE, input=entry("third"))
    assert third.returncode == 0, third.stderr
    assert third.stdout.startswith("published item ")

    from_service = li.json("pubsub", "get", "-n", BLOG_NODE, "-C")
    assert from_service["metadata"]["cached"] is False
    assert len(from_service["items"]) == 3
    text = li("pubsub", "get", "-n", BLOG_NODE, "-i", "first", "-C")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[:3] == [
        '<item xmlns="http://jabber.org/protocol/pubsub" id="first">',
        f'  <entry xmlns="{ATOM}">',
        "    <title>first post</title>",
    ]
    assert text.stdout.rstrip().endswith("(1 item; from the service)")

    # the profile's presence announces urn:xmpp:microblog:0+notify (XEP-0163): its
    # server pushes each post to it, and the first one had the node analysed in the
    # background (as a first get through the cache would): the blog analyser
    # (XEP-0277) claims it and asks for a sync, done in the background too; the posts
    # that follow are notified...
    assert len(li.json("pubsub", "get", "-n", BLOG_NODE)["items"]) == 3
    assert poll(lambda: cache_state(li).get("state") == "completed"), cache_state(li)
    state = cache_state(li)
    assert (state["analyser"], state["type"]) == ("XEP-0277", "blog")
    assert poll(lambda: cache_state(li).get("items") == 3), cache_state(li)
    # ...and "cache sync" synchronises it again now, showing its progress
    sync = li("pubsub", "cache", "sync", "-n", BLOG_NODE, "--output", "json")
    assert sync.returncode == 0, sync.stderr
    state = json.loads(sync.stdout)
    assert state["state"] == "completed"
    assert state["items_done"] == 3
    # stderr is not a terminal: progress comes as plain lines, no bar
    assert f"li: sync of {BLOG_NODE}: synchronising" in sync.stderr
    assert "\r" not in sync.stderr

    cached = li.json("pubsub", "get", "-n", BLOG_NODE, "-M", "2")
    assert cached["metadata"]["cached"] is True
    assert [re.search(r"id=.([^\"']+)", item)[1] for item in cached["items"]] == [
        "second", third.stdout.split()[-1]]
    # (Prosody's PEP ignores RSM: so does the cache answering for it, as the service)
    by_id = li.json("pubsub", "cache", "get", "-n", BLOG_NODE, "-i", "first")
    assert by_id["metadata"]["cached"] is True
    assert len(by_id["items"]) == 1 and "first post" in by_id["items"][0]

    # searches of the cached blog: full text, parsed fields, order, payload
    found = li.json("pubsub", "cache", "search", "-f", "second")
    assert [(hit["id"], hit["node"]) for hit in found["items"]] == [("second", BLOG_NODE)]
    assert found["total"] == 1 and found["items"][0]["rank"] is not None
    by_title = li.json("pubsub", "cache", "search", "-t", "blog", "-F", "title", "ilike",
                       "%POST%", "-o", "item_id", "desc")
    assert [hit["id"] for hit in by_title["items"]] == ["second", "first"]
    assert by_title["items"][0]["parsed"]["title"] == "second post"
    paged = li("pubsub", "cache", "search", "-A", "XEP-0277", "-o", "created", "-l", "2")
    assert paged.returncode == 0, paged.stderr
    header, first, second, footer = paged.stdout.splitlines()
    assert header.split()[:4] == ["ITEM", "SERVICE", "NODE", "UPDATED"]
    assert first.split()[0] == "first" and first.endswith("first post")
    assert footer == "(items 1-2 of 3; next page: --index 2)"
    with_xml = li("pubsub", "cache", "search", "-F", "title", "==", "third", "-P")
    assert with_xml.returncode == 0, with_xml.stderr
    assert with_xml.stdout.splitlines()[1:4] == [
        f'<item xmlns="http://jabber.org/protocol/pubsub" id="{third.stdout.split()[-1]}">',
        f'  <entry xmlns="{ATOM}">',
        "    <title>third</title>",
    ]

    stats = li.json("pubsub", "cache", "stats")
    assert stats["nodes_by_state"].get("completed") == 1
    assert stats["items"] == 3
    state = li.json("pubsub", "cache", "state", "-n", BLOG_NODE)
    assert (state["state"], state["freshness"], state["items"]) == ("completed", "live", 3)

    # disconnected, the cache is still read, saying it may be behind the service
    assert li.json("profile", "disconnect", "alice")["state"] == "disconnected"
    offline = li("pubsub", "cache", "state", "-n", BLOG_NODE)
    assert offline.returncode == 0, offline.stderr
    fields = dict(re.split(r":\s+", line, maxsplit=1)
                  for line in offline.stdout.splitlines())
    assert fields["state"] == "completed" and fields["items"] == "3 items"
    assert fields["freshness"] == "offline (profile disconnected: may be behind the service)"
    assert li.json("pubsub", "cache", "state", "-n", BLOG_NODE)["freshness"] == "offline"
    read = li("pubsub", "cache", "get", "-n", BLOG_NODE, "-i", "first")
    assert read.returncode == 0, read.stderr
    assert "<title>first post</title>" in read.stdout
    assert read.stdout.rstrip().endswith(
        "(1 item; from the cache; profile disconnected: may be behind the service)")
    offline_json = li.json("pubsub", "cache", "get", "-n", BLOG_NODE)
    assert len(offline_json["items"]) == 3
    assert offline_json["metadata"]["freshness"] == "offline"
    # connected again: checked against the service, then live again
    assert li.json("profile", "connect", "alice")["state"] == "connected"
    assert poll(lambda: cache_state(li).get("freshness") == "live"), cache_state(li)

    no_filter = li("pubsub", "cache", "purge")
    assert no_filter.returncode == 2
    assert "--all" in no_filter.stderr
    assert li.json("pubsub", "cache", "purge", "-n", BLOG_NODE) == {"purged_items": 3}
    assert li.json("pubsub", "cache", "stats")["items"] == 0
    assert li.json("pubsub", "cache", "reset") == {"forgotten_nodes": 1}

    assert li.json("pubsub", "retract", "-n", BLOG_NODE, "-i", "first") == {
        "node": BLOG_NODE, "retracted": ["first"]}
    assert len(li.json("pubsub", "get", "-n", BLOG_NODE, "-C")["items"]) == 2
    node_info = li.json("pubsub", "node", "info", "-n", BLOG_NODE)
    assert node_info["configuration"]["pubsub#access_model"] == "open"
    assert li.json("pubsub", "node", "delete", "-n", BLOG_NODE)["deleted"] is True

    # the contact leaves the roster (both subscriptions cancelled): the test accounts
    # are shared with other tests
    assert li("roster", "remove", prosody_server.user(1).jid).returncode == 0
    assert li.json("roster", "list") == []
    assert li.json("profile", "disconnect", "alice")["state"] == "disconnected"
    assert li.json("profile", "info", "alice")["connection"]["state"] == "disconnected"
    # no terminal to confirm on: a script says --yes
    unconfirmed = li("profile", "delete", "alice")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert li.json("profile", "delete", "alice", "--yes")["deleted"] is True
    assert li.json("profile", "list") == []
    assert user.password not in backend_process.output


def test_li_errors_are_clear_and_typed(backend_process, li, prosody_server):
    missing = li("profile", "connect", "nobody")
    assert missing.returncode == 1
    assert missing.stderr == (
        "li: error: there is no profile named 'nobody' [ProfileNotFound]\n")

    no_profile = li("pubsub", "get", "-n", BLOG_NODE)
    assert no_profile.returncode == 1
    assert "li profile create" in no_profile.stderr

    create_profile(li, prosody_server, "alice")
    create_profile(li, prosody_server, "bob", prosody_server.user(1))
    several = li("pubsub", "cache", "stats")
    assert several.returncode == 2
    assert "alice, bob" in several.stderr and "-p PROFILE" in several.stderr

    not_connected = li("pubsub", "get", "-p", "bob", "-n", BLOG_NODE, "--output", "json")
    assert not_connected.returncode == 1
    error = json.loads(not_connected.stdout)["error"]
    assert error["type"] == "NotConnected"
    assert "connect it first" in error["message"]
    unknown = li("pubsub", "get", "-p", "carol", "-n", BLOG_NODE)
    assert unknown.returncode == 1
    assert "there is no profile named 'carol' [ProfileNotFound]" in unknown.stderr

    assert li.json("profile", "connect", "bob")["state"] == "connected"
    absent = li("pubsub", "get", "-p", "bob", "-s", prosody_server.pubsub_service,
                "-n", "no-such-node")
    assert absent.returncode == 1
    assert re.search(r"\[\w+\]$", absent.stderr.strip()), absent.stderr
    # the failed get left nothing in the cache: the node is as unknown as one never
    # asked for (same exit status, same words), and nothing is counted
    for node in ("no-such-node", "never-asked-node"):
        state = li("pubsub", "cache", "state", "-p", "bob", "-s",
                   prosody_server.pubsub_service, "-n", node)
        assert (state.returncode, state.stdout) == (1, ""), state.stdout
        assert state.stderr == (f"li: error: node '{node}' of "
                                f"{prosody_server.pubsub_service} is not in the cache "
                                "[NotFound]\n")
    assert li.json("pubsub", "cache", "stats", "-p", "bob")["nodes"] == 0

    bad_xml = li("pubsub", "set", "-p", "bob", "-n", BLOG_NODE, input="<entry>")
    assert bad_xml.returncode == 1
    assert "not well-formed XML" in bad_xml.stderr


def test_li_profile_modify_applies_at_the_next_connection(
    backend_process, li, prosody_server
):
    # created without the private server's CA: the TLS check fails, and says so
    user = prosody_server.user(0)
    created = li("profile", "create", "alice", "--jid", user.jid, "--host", "127.0.0.1",
                 "--port", str(prosody_server.c2s_port), input=user.password + "\n")
    assert created.returncode == 0, created.stderr
    refused = li("profile", "connect", "alice")
    assert refused.returncode == 1
    assert "CA file" in refused.stderr

    modified = li("profile", "modify", "alice", "--ca-file", str(prosody_server.ca_file))
    assert modified.returncode == 0, modified.stderr
    assert modified.stdout.startswith("profile alice: CA file changed\n")
    assert "apply when it next connects" in modified.stdout
    assert li.json("profile", "connect", "alice")["state"] == "connected"

    # connected: the change waits for the next connection, and li says so
    changed = li("profile", "modify", "alice", "--mechanisms", "SCRAM-SHA-1")
    assert changed.returncode == 0, changed.stderr
    assert "It is connected with the previous settings" in changed.stdout
    assert li.json("profile", "info", "alice")["connection"]["sasl_mechanism"] != (
        "SCRAM-SHA-1")
    assert li.json("profile", "disconnect", "alice")["state"] == "disconnected"
    assert li.json("profile", "connect", "alice")["sasl_mechanism"] == "SCRAM-SHA-1"


class Watch:
    """``li pubsub watch`` running as a user leaves it in another terminal."""

    def __init__(self, li, *args):
        import queue
        import subprocess
        import threading

        self.process = subprocess.Popen(
            [li.script, "pubsub", "watch", *args], env=li.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)

    def next_line(self, timeout=15.0):
        return self.lines.get(timeout=timeout)

    def stop(self):
        """Ctrl-C: the exit status and what was printed on standard error."""
        import signal

        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=15)
        return status, self.process.stderr.read()


def _default_sigint():
    from tests.support import _default_sigint as default

    default()


def test_li_watch_node_list_and_several_items_at_once(backend_process, li, prosody_server):
    # the pubsub service lets its admin create nodes
    create_profile(li, prosody_server, user=prosody_server.admin)
    assert li.json("profile", "connect", "alice")["state"] == "connected"
    service = prosody_server.pubsub_service
    node = "li-watch"
    assert li.json("pubsub", "node", "create", "-s", service, "-n", node,
                   "-O", "pubsub#title=Watched")["created"] is True
    listed = li.json("pubsub", "node", "list", "-s", service)
    assert [n["jid"] for n in listed if n["node"] == node] == [service], listed
    text = li("pubsub", "node", "list", "-s", service)
    assert text.returncode == 0 and node in text.stdout
    assert li.json("pubsub", "subscribe", "-s", service, "-n", node)["state"] == "subscribed"

    json_watch = Watch(li, "-s", service, "-n", node, "--output", "json")
    text_watch = Watch(li, "-s", service)
    # both listen once their subscription to the signal is made: publish until the
    # first event shows (a notification sent before would not be printed)
    first = None
    for attempt in range(50):
        published = li("pubsub", "set", "-s", service, "-n", node, "-i", f"probe{attempt}",
                       input=entry(f"probe {attempt}"))
        assert published.returncode == 0, published.stderr
        try:
            first = json.loads(json_watch.next_line(timeout=0.5))
            break
        except Exception:  # queue.Empty: not listening yet
            continue
    assert first is not None and first["type"] == "items"
    # several items in one "li pubsub set"
    several = "\n".join(f'<item id="{i}">{entry(i)}</item>' for i in ("one", "two"))
    published = li("pubsub", "set", "-s", service, "-n", node, input=several)
    assert published.returncode == 0, published.stderr
    assert published.stdout == "published items one, two\n"
    events = []
    while not events or events[-1].get("item_ids") != ["two"]:
        events.append(json.loads(json_watch.next_line()))
    assert [e["item_ids"] for e in events[-2:]] == [["one"], ["two"]]
    assert "<title>one</title>" in events[-2]["items"][0]
    assert li.json("pubsub", "retract", "-s", service, "-n", node, "-i", "one")
    assert li.json("pubsub", "node", "purge", "-s", service, "-n", node)
    while events[-1]["type"] != "purge":
        events.append(json.loads(json_watch.next_line()))
    assert [e["type"] for e in events[-2:]] == ["retract", "purge"]
    assert events[-2]["item_ids"] == ["one"]

    status, err = json_watch.stop()
    assert (status, err) == (0, "")
    text_lines = []
    while not any("purged" in line for line in text_lines):
        text_lines.append(text_watch.next_line())
    status, err = text_watch.stop()
    assert status == 0 and "Traceback" not in err
    assert any(line.endswith(f"{service} {node}: 1 item published: two\n")
               for line in text_lines), text_lines
    assert any(line.endswith(f"{service} {node}: 1 item retracted: one\n")
               for line in text_lines), text_lines
