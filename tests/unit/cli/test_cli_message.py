"""``li message``: arguments, outputs and exit codes.

Commands run against a real backend (storage, bridge, the messages plugin) with no
XMPP server: the history is read offline, sending needs a connection and says so.
Messages sent and received through servers are covered by the integration tests
(tests/integration/test_messages.py).
"""

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from twisted.internet import threads

from libervia.backend.memory.storage import HistoryMessage
from libervia.cli.commands import completion
from libervia.cli.main import build_parser, main
from tests.unit.cli.conftest import assert_usage_error, run_li_sync
from tests.unit.cli.test_cli_presence_roster import create_alice
from tests.unit.cli.test_cli_pubsub_verbs import InterruptedOutput, until

T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("argv", [
    ("message", "send"),
    ("message", "send", "a@example.org", "hi", "extra"),
    ("message", "send", "a@example.org", "hi", "--type", "groupchat"),
    ("message", "history", "-M", "0"),
    ("message", "history", "-M", "many"),
    ("message", "history", "a@example.org", "b@example.org"),
    ("message", "watch", "a@example.org", "b@example.org"),
])
def test_usage_errors_exit_with_status_2_before_any_call(argv, capsys):
    assert_usage_error(argv, capsys)


def test_message_commands_have_a_help_and_are_completed(capsys):
    script = completion.bash_script(build_parser())
    for command in ("message send", "message history", "message watch"):
        status, __, __ = run_li_sync(*command.split(), "--help")
        assert status == 0
        assert capsys.readouterr().out.startswith(f"usage: li {command}")
        assert f"'li {command}'" in script
    assert "['li message send --type']='chat normal headline'" in script


def stored(n, contact="bob@example.org", direction="in", body=None):
    incoming = direction == "in"
    return HistoryMessage(
        str(uuid.uuid4()), contact if incoming else "alice@example.org", "r",
        "alice@example.org" if incoming else contact, None, contact,
        T0 + timedelta(minutes=n), T0 + timedelta(minutes=n), "chat", direction,
        {"": body or f"message {n}"})


@pytest_twisted.ensureDeferred
async def test_the_history_is_read_offline_as_a_conversation(run_li_pubsub,
                                                              pubsub_backend,
                                                              monkeypatch):
    await create_alice(run_li_pubsub, monkeypatch)
    status, out, err = await run_li_pubsub("message", "history")
    assert (status, out) == (0, "(no message)\n"), err
    history = pubsub_backend.storage.history
    messages = [stored(0), stored(1, direction="out", body="two\nlines"),
                stored(2, "carol@example.org", body="train ticket")]
    for message in messages:
        await history.add("alice", message)
    status, out, err = await run_li_pubsub("message", "history", "bob@example.org")
    assert status == 0, err
    assert out.splitlines() == [
        "2026-12-08 09:00:00  < bob@example.org: message 0",
        "2026-12-08 09:01:00  > bob@example.org: two",
        "                      lines"]
    status, out, err = await run_li_pubsub("message", "history", "-M", "1",
                                           "--output", "json")
    [last] = json.loads(out)
    assert (last["uid"], last["body"]) == (messages[2].uid, "train ticket")
    status, out, err = await run_li_pubsub("message", "history", "--before", last["uid"],
                                           "-M", "1", "--output", "json")
    assert [m["uid"] for m in json.loads(out)] == [messages[1].uid]
    status, out, err = await run_li_pubsub("message", "history", "--after",
                                           messages[0].uid, "--output", "json")
    assert [m["uid"] for m in json.loads(out)] == [m.uid for m in messages[1:]]
    status, out, err = await run_li_pubsub("message", "history", "-f", "ticket")
    assert out == "2026-12-08 09:02:00  < carol@example.org: train ticket\n"
    status, out, err = await run_li_pubsub("message", "history", "--since",
                                           "2026-12-08T09:01:00Z", "--until",
                                           "2026-12-08T09:02:00Z", "--output", "json")
    assert [m["uid"] for m in json.loads(out)] == [messages[1].uid]


@pytest_twisted.ensureDeferred
async def test_bad_values_and_an_offline_send_are_errors_saying_what_to_do(
        run_li_pubsub, monkeypatch):
    await create_alice(run_li_pubsub, monkeypatch)
    for argv, text in (
            (("message", "history", "--since", "someday"), "no ISO 8601 date"),
            (("message", "history", "@bad"), "invalid JID"),
            (("message", "history", "--before", "nope"), "no message"),
            (("message", "send", "bob@example.org", "hi"), "not connected"),
    ):
        status, out, err = await run_li_pubsub(*argv)
        assert (status, out) == (1, ""), (argv, err)
        assert text in err, (argv, err)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status, out, err = await run_li_pubsub("message", "send", "bob@example.org")
    assert (status, out) == (1, "")
    assert "nothing to send" in err


@pytest_twisted.ensureDeferred
async def test_watch_prints_the_messages_of_a_conversation_until_ctrl_c(
        run_li_pubsub, pubsub_backend, monkeypatch):
    await create_alice(run_li_pubsub, monkeypatch)
    socket_path = str(pubsub_backend.getServiceNamed("bridge").path)
    for argv, expected in (
            (["--output", "json"], None),
            ([], ["2026-12-08 09:00:00  < bob@example.org: message 0",
                  "2026-12-08 09:02:00  > bob@example.org: last"])):
        out, err = InterruptedOutput(lines=2), io.StringIO()
        done = threads.deferToThread(main, ["--socket", socket_path, "message", "watch",
                                            "bob@example.org", *argv], out=out, err=err)
        await until(lambda: pubsub_backend.bridge.is_wanted("message_new"))
        for message in (stored(0), stored(1, "carol@example.org"),
                        stored(2, direction="out", body="last")):
            pubsub_backend.bridge.emit_signal("message_new", profile="alice",
                                              via="live", message=message.to_dict())
        assert await done == 0
        # the profile is not connected: said once, on standard error
        assert "no message comes until it is connected" in err.getvalue()
        if expected is None:
            lines = [json.loads(line) for line in out.getvalue().splitlines()]
            assert [(m["profile"], m["via"], m["body"]) for m in lines] == [
                ("alice", "live", "message 0"), ("alice", "live", "last")]
        else:
            assert out.getvalue().splitlines() == expected
        await until(lambda: not pubsub_backend.bridge.is_wanted("message_new"))
