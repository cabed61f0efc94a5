"""``li profile modify`` (bridge ``profile_modify``) and the confirmation of ``li profile
delete``, against a real backend without XMPP server."""

import io
import json

import pytest
import pytest_twisted

from libervia.cli.commands.profile import render_modified
from tests.unit.cli.test_cli_profile_pubsub import SECRET, Stdin


async def create(run_li, monkeypatch, name="alice"):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    status, __, err = await run_li("profile", "create", name, "--jid",
                                   f"{name}@example.org", "--host", "xmpp.example.org",
                                   "--port", "5222", "--mechanisms", "SCRAM-SHA-256")
    assert status == 0, err


def fields(text):
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines()
                                      if ":" in line)}


@pytest_twisted.ensureDeferred
async def test_modify_changes_only_what_is_given_and_says_when_it_applies(
    run_li_pubsub, monkeypatch, tmp_path
):
    await create(run_li_pubsub, monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text("checked when connecting\n")
    status, out, err = await run_li_pubsub(
        "profile", "modify", "alice", "--ca-file", "ca.pem", "--direct-tls", "--port",
        "5223", "--autoconnect", "--output", "json")
    assert (status, err) == (0, ""), err
    result = json.loads(out)
    assert sorted(result["changed"]) == ["autoconnect", "ca_file", "direct_tls", "port"]
    assert result["options"] == {
        "host": "xmpp.example.org", "port": 5223, "direct_tls": True,
        "ca_file": str(tmp_path / "ca.pem"), "mechanisms": ["SCRAM-SHA-256"],
        "autoconnect": True}
    assert result["connection"]["state"] == "disconnected"

    # what is stored is what the next connection uses
    status, out, __ = await run_li_pubsub("profile", "info", "alice", "--output", "json")
    assert json.loads(out)["options"] == result["options"]

    status, out, err = await run_li_pubsub("profile", "modify", "alice", "--no-direct-tls",
                                           "--host", "", "--port", "", "--mechanisms", "")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == ("profile alice: server host, port, direct TLS, mechanisms "
                        "allowed changed")
    shown = fields(out)
    assert shown["server"] == "(from DNS) (STARTTLS)"
    assert shown["mechanisms allowed"] == "all"
    assert lines[-1] == ("The new settings apply when it next connects "
                         "(li profile connect alice).")

    # the same values again: nothing changes, and li says so
    status, out, __ = await run_li_pubsub("profile", "modify", "alice", "--no-direct-tls")
    assert (status, out) == (0, "profile alice: unchanged (the settings given are its "
                                "own)\n")


def test_a_connected_profile_is_told_to_reconnect_and_autoconnect_waits_a_restart():
    ctx = type("Ctx", (), {"out": io.StringIO()})()
    render_modified(ctx, {
        "name": "alice", "jid": "alice@example.org", "changed": ["port", "autoconnect"],
        "options": {"port": 5223, "autoconnect": False},
        "connection": {"profile": "alice", "state": "connected"}})
    text = ctx.out.getvalue()
    assert text.startswith("profile alice: port, autoconnect changed\n")
    assert ("It is connected with the previous settings: the new ones apply from its "
            "next connection (li profile disconnect alice, then li profile connect "
            "alice).") in text
    assert text.endswith("It no longer connects by itself from the next start of the "
                         "backend.\n")


@pytest.mark.parametrize("argv, message", [
    (["alice"], "nothing to change"),
    (["alice", "--port", "70000"], "out of range"),
    (["alice", "--port", "x"], "expected a port number"),
    (["alice", "--direct-tls", "--no-direct-tls", "--bogus"], "unrecognized"),
])
def test_modify_usage_errors_exit_2_before_any_call(li_env, socket_dir, capsys, argv,
                                                     message):
    from tests.unit.cli.conftest import run_li_sync

    # no backend on this socket: a call would fail with status 1, not 2
    status, out, err = run_li_sync("--socket", str(socket_dir / "none.sock"), "profile",
                                   "modify", *argv)
    err += capsys.readouterr().err
    assert (status, out) == (2, "")
    assert message in err


@pytest.mark.parametrize("params, error_type, message", [
    ({"name": "nobody", "port": 5223}, "ProfileNotFound", "nobody"),
    ({"name": "alice"}, "ProfileError", "nothing to change"),
    ({"name": "alice", "port": 0}, "ProfileError", "out of range"),
    ({"name": "alice", "port": 2**63}, "ProfileError", "out of range"),
    ({"name": "alice", "host": "a b"}, "ProfileError", "invalid server host"),
    ({"name": "alice", "host": "x\x00y"}, "ProfileError", "invalid server host"),
    ({"name": "alice", "host": "h" * 5000}, "ProfileError", "invalid server host"),
    ({"name": "alice", "ca_file": "/no/such/ca.pem"}, "ProfileError", "does not exist"),
    ({"name": "alice", "ca_file": "x" * 5000}, "ProfileError", "can't be used"),
    ({"name": "alice", "mechanisms": ["NOPE"]}, "ProfileError", "unknown SASL"),
    ({"name": "alice", "port": 5223, "reset": ["port"]}, "ProfileError", "at once"),
    ({"name": "alice", "reset": ["jid"]}, "InvalidParams", "reset"),
    ({"name": "alice", "port": "5223"}, "InvalidParams", "port"),
    ({"name": "alice", "autoconnect": "yes"}, "InvalidParams", "autoconnect"),
])
@pytest_twisted.ensureDeferred
async def test_profile_modify_refuses_bad_values_with_a_typed_error(
    run_li_pubsub, monkeypatch, params, error_type, message
):
    await create(run_li_pubsub, monkeypatch)
    status, out, err = await run_li_pubsub(
        "backend", "call", "profile_modify", json.dumps(params), "--output", "json")
    assert status == 1, out
    error = json.loads(out)["error"]
    assert error["type"] == error_type
    assert message in error["message"]
    assert "Traceback" not in err
    # nothing was changed
    status, out, __ = await run_li_pubsub("profile", "info", "alice", "--output", "json")
    assert json.loads(out)["options"]["port"] == 5222


# deleting


@pytest_twisted.ensureDeferred
async def test_delete_on_a_terminal_asks_and_only_yes_deletes(run_li_pubsub, monkeypatch):
    await create(run_li_pubsub, monkeypatch)
    for answer in ("\n", "no\n", ""):
        monkeypatch.setattr("sys.stdin", Stdin(answer, tty=True))
        status, out, err = await run_li_pubsub("profile", "delete", "alice")
        assert (status, out) == (1, "")
        assert err.startswith("delete profile alice and everything the backend stored "
                              "for it")
        assert "[y/N] li: error: cancelled: nothing was deleted" in err
    status, out, __ = await run_li_pubsub("profile", "list", "--output", "json")
    assert [p["name"] for p in json.loads(out)] == ["alice"]

    monkeypatch.setattr("sys.stdin", Stdin("y\n", tty=True))
    status, out, err = await run_li_pubsub("profile", "delete", "alice")
    assert (status, out) == (0, "profile alice: deleted\n"), err
    status, out, __ = await run_li_pubsub("profile", "list", "--output", "json")
    assert json.loads(out) == []


@pytest_twisted.ensureDeferred
async def test_delete_without_a_terminal_needs_yes(run_li_pubsub, monkeypatch):
    await create(run_li_pubsub, monkeypatch)
    monkeypatch.setattr("sys.stdin", Stdin("y\n"))
    status, out, err = await run_li_pubsub("profile", "delete", "alice")
    assert (status, out) == (2, "")
    assert "add --yes" in err
    status, out, __ = await run_li_pubsub("profile", "list", "--output", "json")
    assert [p["name"] for p in json.loads(out)] == ["alice"]
    status, out, err = await run_li_pubsub("profile", "delete", "alice", "-y")
    assert (status, out) == (0, "profile alice: deleted\n"), err


@pytest_twisted.ensureDeferred
async def test_delete_of_a_missing_profile_asks_nothing(run_li_pubsub, monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin("y\n", tty=True))
    status, __, err = await run_li_pubsub("profile", "delete", "nobody")
    assert status == 1
    assert "[y/N]" not in err and "nobody" in err and "[ProfileNotFound]" in err
