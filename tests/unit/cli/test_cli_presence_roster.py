"""``li presence`` and ``li roster``: arguments, outputs and exit codes.

Commands run against a real backend (storage, bridge, the presence, roster and pubsub
plugins) with no XMPP server: the presence set while a profile is offline is kept for
its next connection, the stored roster and requests are read offline.  What needs a
connection is covered by the integration tests (tests/integration/test_roster.py).
"""

import io
import json

import pytest
import pytest_twisted

from libervia.cli.commands import completion
from libervia.cli.commands.presence import render_get
from libervia.cli.commands.roster import render_list, render_updated
from libervia.cli.main import build_parser
from tests.unit.cli.conftest import assert_usage_error, run_li_sync


async def create_alice(run_li, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("password\n"))
    status, __, err = await run_li("profile", "create", "alice", "--jid",
                                   "alice@example.org", "--password-stdin")
    assert status == 0, err


@pytest.mark.parametrize("argv", [
    ("presence", "set", "--show", "busy"),
    ("presence", "set", "--priority", "128"),
    ("presence", "set", "--priority", "high"),
    ("presence", "get", "a@example.org", "b@example.org"),
    ("roster", "add"),
    ("roster", "add", "a@example.org", "--group"),
    ("roster", "accept"),
    ("roster", "update"),
    ("roster", "update", "a@example.org", "--group", "G", "--no-groups"),
    ("roster", "frobnicate"),
])
def test_usage_errors_exit_with_status_2_before_any_call(argv, capsys):
    assert_usage_error(argv, capsys)


def test_presence_and_roster_commands_have_a_help_and_are_completed(capsys):
    script = completion.bash_script(build_parser())
    for command in ("presence set", "presence get", "roster list", "roster add",
                    "roster update", "roster remove", "roster pending", "roster accept",
                    "roster deny"):
        status, __, __ = run_li_sync(*command.split(), "--help")
        assert status == 0
        assert capsys.readouterr().out.startswith(f"usage: li {command}")
        assert f"'li {command}'" in script
    assert "['li presence set --show']='away xa dnd chat'" in script
    assert "['li roster add -p']=@profile" in script
    assert "--no-groups" in script


@pytest_twisted.ensureDeferred
async def test_a_presence_set_offline_is_kept_and_shown(run_li_pubsub, monkeypatch):
    await create_alice(run_li_pubsub, monkeypatch)
    status, out, err = await run_li_pubsub("presence", "set", "--show", "away",
                                           "--status", "lunch", "--priority", "-3",
                                           "--output", "json")
    assert status == 0, err
    assert json.loads(out) == {"show": "away", "status": "lunch", "priority": -3}
    status, out, err = await run_li_pubsub("presence", "get")
    assert status == 0, err
    assert out.splitlines() == ["own presence: away (-3): lunch",
                                "(no contact available)"]
    status, out, err = await run_li_pubsub("presence", "get", "bob@example.org",
                                           "--output", "json")
    assert json.loads(out)["contacts"] == [
        {"jid": "bob@example.org", "available": False, "best": None, "resources": []}]
    # what is not given is reset
    status, out, err = await run_li_pubsub("presence", "set")
    assert status == 0, err
    assert out.splitlines() == ["show:     available", "status:   ", "priority: 0"]


@pytest.mark.parametrize("argv, message", [
    (("presence", "set", "--status", "a\x01b"), "XML forbids"),
    (("presence", "get", "a@b@c"), "invalid JID"),
    (("presence", "set", "-p", "nobody"), "nobody"),
])
@pytest_twisted.ensureDeferred
async def test_values_the_backend_refuses_exit_with_status_1(run_li_pubsub, monkeypatch,
                                                             argv, message):
    await create_alice(run_li_pubsub, monkeypatch)
    status, out, err = await run_li_pubsub(*argv)
    assert status == 1
    assert message in err and out == ""


def test_presences_are_shown_one_resource_a_line_with_the_winner_marked():
    out = io.StringIO()
    ctx = type("Ctx", (), {"out": out})()
    render_get(ctx, {"own": {"show": None, "status": None, "priority": 0}, "contacts": [
        {"jid": "bob@example.org", "available": True, "best": "phone", "resources": [
            {"resource": "pc", "show": "xa", "status": None, "priority": 0},
            {"resource": "phone", "show": None, "status": "hi", "priority": 5}]},
        {"jid": "server.example.org", "available": True, "best": "", "resources": [
            {"resource": "", "show": None, "status": None, "priority": 0}]},
    ]})
    assert out.getvalue().splitlines() == [
        "own presence: available",
        "JID                       PRESENCE",
        "bob@example.org/pc        xa",
        "bob@example.org/phone  *  available (5): hi",
        "server.example.org     *  available",
    ]


@pytest_twisted.ensureDeferred
async def test_the_roster_and_requests_are_read_offline(run_li_pubsub, monkeypatch):
    await create_alice(run_li_pubsub, monkeypatch)
    for command in ("list", "ls"):
        status, out, err = await run_li_pubsub("roster", command)
        assert (status, out) == (0, "(no contact)\n"), err
    status, out, err = await run_li_pubsub("roster", "pending", "--output", "json")
    assert (status, json.loads(out)) == (0, [])


@pytest.mark.parametrize("argv, message", [
    (("roster", "add", "bob@example.org"), "not connected"),
    (("roster", "remove", "bob@example.org"), "not connected"),
    (("roster", "update", "bob@example.org", "--name", "Bob"), "not connected"),
    (("roster", "accept", "bob@example.org"), "not connected"),
    (("roster", "deny", "bob@example.org"), "not connected"),
    (("roster", "list", "-p", "nobody"), "nobody"),
])
@pytest_twisted.ensureDeferred
async def test_roster_changes_need_a_connection(run_li_pubsub, monkeypatch, argv,
                                                message):
    await create_alice(run_li_pubsub, monkeypatch)
    status, out, err = await run_li_pubsub(*argv)
    assert status == 1 and out == ""
    assert message in err


def test_an_update_is_shown_with_the_name_and_groups_kept():
    out = io.StringIO()
    ctx = type("Ctx", (), {"out": out})()
    render_updated(ctx, {"jid": "bob@example.org", "name": None, "subscription": "both",
                         "ask": False, "groups": ["Chess", "Friends"]})
    render_updated(ctx, {"jid": "bob@example.org", "name": "Bob", "subscription": "both",
                         "ask": False, "groups": []})
    assert out.getvalue().splitlines() == [
        "bob@example.org updated; name: (none); groups: Chess, Friends",
        "bob@example.org updated; name: Bob; groups: (none)"]


def test_contacts_are_shown_with_subscription_and_presence():
    out = io.StringIO()
    ctx = type("Ctx", (), {"out": out})()
    render_list(ctx, [
        {"jid": "bob@example.org", "name": "Bob", "subscription": "both", "ask": False,
         "groups": ["Friends", "Work"], "presence": {"resource": "pc", "show": "away",
                                                     "status": "lunch", "priority": 0}},
        {"jid": "carol@example.org", "name": None, "subscription": "none", "ask": True,
         "groups": [], "presence": None}])
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["JID", "NAME", "GROUPS", "SUBSCRIPTION", "PRESENCE"]
    assert lines[1].split() == ["bob@example.org", "Bob", "Friends,", "Work", "both",
                                "ways", "away:", "lunch"]
    assert lines[2].split() == ["carol@example.org", "none,", "asked", "unavailable"]
