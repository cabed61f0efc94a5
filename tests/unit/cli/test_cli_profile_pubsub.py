"""``li profile`` and ``li pubsub``: arguments, passwords, outputs and exit codes.

Commands run against a real backend (storage, bridge, pubsub and cache plugins) with no
XMPP server: what needs a connection is covered by tests/e2e/test_li_prosody.py.
"""

import argparse
import io
import json
import os

import pytest
import pytest_twisted

from libervia.backend.core.exceptions import ProfileNotFound
from libervia.backend.memory.sqla_mapping import SyncState
from libervia.backend.plugins.xep_0060 import NS_PUBSUB
from libervia.cli.commands import completion
from libervia.cli.commands.pubsub.cache import Progress
from libervia.cli.commands.pubsub.items import item_xml
from libervia.cli.main import build_parser
from libervia.cli.xml_format import XMLError, indent
from tests.unit.cli.conftest import run_li_sync

SECRET = "s3cret-Pässword"


class Stdin(io.StringIO):
    """Standard input as a test wants it: a terminal or not."""

    def __init__(self, text: str = "", tty: bool = False) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Stderr(Stdin):
    pass


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


# parsing


def test_pubsub_get_parses_every_option_of_the_issue():
    args = parse("pubsub", "get", "-p", "alice", "-s", "pubsub.example.org", "-n", "news",
                 "-M", "5", "-i", "a", "-i", "b", "-m", "10", "-a", "x", "-o",
                 "modification", "-C")
    assert (args.profile, args.service, args.node) == ("alice", "pubsub.example.org",
                                                        "news")
    assert (args.max_items, args.item_ids, args.rsm_max, args.after) == (5, ["a", "b"],
                                                                         10, "x")
    assert (args.order_by, args.use_cache, args.before, args.index) == (
        "modification", False, None, None)
    args = parse("pubsub", "get", "-n", "news", "-b", "")
    assert (args.before, args.use_cache) == ("", True)


@pytest.mark.parametrize("argv", [
    ("pubsub", "get", "-n", "news", "-a", "x", "-b", "y"),
    ("pubsub", "get", "-n", "news", "-a", "x", "--index", "2"),
    ("pubsub", "get", "-s", "pubsub.example.org"),
    ("pubsub", "get", "-n", "news", "-M", "-3"),
    ("pubsub", "get", "-n", "news", "-o", "random"),
    ("pubsub", "node", "create", "-n", "news", "-O", "no-equal-sign"),
    ("pubsub", "retract", "-n", "news"),
    ("profile", "create", "alice"),
    ("profile", "create", "alice", "--jid", "a@example.org", "--port", "70000"),
    ("profile", "create", "alice", "--jid", "a@example.org", "--password", SECRET),
    ("pubsub", "cache", "search", "-F", "title", "=="),
    ("pubsub", "cache", "search", "-l", "ten"),
])
def test_usage_errors_exit_with_status_2_before_any_call(argv, capsys):
    status, out, err = run_li_sync(*argv, "--socket", "/nonexistent/bridge.sock")
    captured = capsys.readouterr()  # argparse writes to the process's streams
    err += captured.err
    assert status == 2, err
    assert out + captured.out == ""
    assert "error:" in err and "--help" in err
    assert SECRET not in err


def test_no_option_of_the_tree_takes_a_password_value():
    def options(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from options(child)
            else:
                yield action

    refusing = 0
    for action in options(build_parser()):
        if any("pass" in o for o in action.option_strings):
            if action.help == argparse.SUPPRESS:
                refusing += 1  # --password, there to refuse a value, never echoing it
            else:
                assert action.nargs == 0, action.option_strings
    assert refusing == 2  # profile create, profile password


@pytest.mark.parametrize("option", [("--password", SECRET), (f"--password={SECRET}",)])
def test_a_password_option_is_refused_without_echoing_it(option, capsys):
    status, __, __ = run_li_sync("profile", "create", "alice", "--jid", "a@example.org",
                                 *option)
    err = capsys.readouterr().err
    assert status == 2
    assert "never given on the command line" in err and "--password-stdin" in err
    assert SECRET not in err


def test_every_new_command_has_a_help_and_is_completed(capsys):
    script = completion.bash_script(build_parser())
    for command in ("profile create", "profile modify", "profile info", "pubsub get",
                    "pubsub set", "pubsub watch", "pubsub node list",
                    "pubsub node create", "pubsub cache sync", "pubsub cache purge"):
        assert f"['li {command}']=" in script or f"[li\\ {command}]" in script or (
            f"'li {command}'" in script), command
        status, __, __ = run_li_sync(*command.split(), "--help")
        assert status == 0
        assert capsys.readouterr().out.startswith(f"usage: li {command}")
    assert "[\'li pubsub get -o\']=\'creation modification\'" in script
    assert "[\'li profile create --ca-file\']=@file" in script
    assert "[\'li profile modify --ca-file\']=@file" in script
    assert "--no-direct-tls" in script and "--no-autoconnect" in script
    assert "[\'li profile delete\']=\'-h --help --output --socket --config --timeout -y " \
        "--yes\'" in script


# passwords and profiles


@pytest_twisted.ensureDeferred
async def test_profile_create_reads_the_password_from_stdin_and_never_prints_it(
    run_li_pubsub, monkeypatch, tmp_path
):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ca.pem").write_text("not checked before connecting\n")
    status, out, err = await run_li_pubsub(
        "profile", "create", "alice", "--jid", "alice@example.org", "--ca-file", "ca.pem",
        "--mechanisms", "scram-sha-256,SCRAM-SHA-256-PLUS", "--port", "5223",
        "--direct-tls", "--output", "json")
    assert (status, err) == (0, "")
    created = json.loads(out)
    assert SECRET not in out
    assert created["name"] == "alice"
    # a relative path means nothing to the backend: li sends it absolute
    assert created["options"]["ca_file"] == str(tmp_path / "ca.pem")
    assert created["options"]["mechanisms"] == ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
    assert created["options"]["direct_tls"] is True

    status, out, err = await run_li_pubsub("profile", "info", "alice")
    assert status == 0, err
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}
    assert fields["JID"] == "alice@example.org"
    assert fields["state"] == "disconnected"
    assert fields["server"] == "(from DNS) port 5223 (direct TLS)"
    assert SECRET not in out

    status, out, __ = await run_li_pubsub("profile", "list")
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == ["PROFILE", "JID", "STATE", "AUTOCONNECT"]
    assert row.split() == ["alice", "alice@example.org", "disconnected", "no"]


@pytest_twisted.ensureDeferred
async def test_on_a_terminal_the_password_is_asked_without_echo(
    run_li_pubsub, monkeypatch
):
    stdin = Stdin("must not be read\n", tty=True)
    prompts = []

    def getpass(prompt):
        prompts.append(prompt)
        return SECRET

    monkeypatch.setattr("sys.stdin", stdin)
    monkeypatch.setattr("getpass.getpass", getpass)
    status, out, err = await run_li_pubsub("profile", "create", "bob", "--jid",
                                           "bob@example.org")
    assert status == 0, err
    assert prompts == ["password of bob@example.org: "]
    assert stdin.tell() == 0
    assert SECRET not in out + err
    assert "profile:" in out and "bob@example.org" in out


@pytest_twisted.ensureDeferred
async def test_password_stdin_reads_a_line_without_prompt(run_li_pubsub, monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\r\nnext line\n"))
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("prompted"))
    status, __, err = await run_li_pubsub(
        "profile", "create", "carol", "--jid", "carol@example.org", "--password-stdin")
    assert (status, err) == (0, "")
    # on a terminal too, what is typed is not echoed: no prompt, still no echo
    prompts = []
    monkeypatch.setattr("sys.stdin", Stdin("", tty=True))
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or SECRET)
    status, __, err = await run_li_pubsub(
        "profile", "password", "carol", "--password-stdin")
    assert (status, err, prompts) == (0, "", [""])


@pytest_twisted.ensureDeferred
async def test_an_empty_password_is_refused_before_anything_is_created(
    run_li_pubsub, monkeypatch
):
    monkeypatch.setattr("sys.stdin", Stdin(""))
    status, out, err = await run_li_pubsub("profile", "create", "dave", "--jid",
                                           "dave@example.org", "--output", "json")
    assert status == 1
    assert "no password given" in err
    assert json.loads(out)["error"]["type"] == "CommandError"
    status, out, __ = await run_li_pubsub("profile", "list", "--output", "json")
    assert json.loads(out) == []


@pytest_twisted.ensureDeferred
async def test_backend_errors_are_shown_with_their_type(run_li_pubsub, monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    status, __, err = await run_li_pubsub("profile", "create", "eve", "--jid", "no-user")
    assert status == 1
    assert err.startswith("li: error: ") and "user@server" in err
    assert err.rstrip().endswith("[ProfileError]")

    status, out, err = await run_li_pubsub("profile", "connect", "nobody", "--output",
                                           "json")
    assert status == 1
    assert json.loads(out)["error"]["type"] == "ProfileNotFound"
    assert "nobody" in err


@pytest_twisted.ensureDeferred
async def test_profile_create_checks_name_jid_and_existence_before_the_password(
    run_li_pubsub, monkeypatch
):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    status, __, err = await run_li_pubsub("profile", "create", "alice", "--jid",
                                          "alice@example.org")
    assert status == 0, err
    for argv, error_type, words in (
        (("-bad name", "--jid", "x@example.org"), "ProfileError", "invalid profile name"),
        (("eve", "--jid", "no-user"), "ProfileError", "user@server"),
        (("eve", "--jid", "eve@example.org", "--mechanisms", "MD5"), "ProfileError",
         "unknown SASL mechanism"),
        (("alice", "--jid", "alice@example.org"), "ConflictError", "exists already"),
    ):
        stdin = Stdin(SECRET + "\n")
        monkeypatch.setattr("sys.stdin", stdin)
        status, __, err = await run_li_pubsub("profile", "create", *argv)
        assert status == 1, argv
        assert words in err and err.rstrip().endswith(f"[{error_type}]"), err
        # refused before the password was read
        assert stdin.tell() == 0, argv


@pytest_twisted.ensureDeferred
async def test_every_method_taking_a_profile_says_when_it_does_not_exist(run_li_pubsub):
    for argv in (("pubsub", "get", "-n", "news"), ("pubsub", "cache", "stats"),
                 ("pubsub", "cache", "search", "-f", "word"),
                 ("pubsub", "node", "info", "-n", "news"),
                 ("pubsub", "cache", "state", "-n", "news")):
        status, out, err = await run_li_pubsub(*argv, "-p", "nobody", "--output", "json")
        assert status == 1, argv
        assert json.loads(out)["error"] == {
            "code": -32001, "type": "ProfileNotFound",
            "message": "there is no profile named 'nobody'"}, argv


@pytest_twisted.ensureDeferred
async def test_profile_delete_and_disconnect(run_li_pubsub, monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    await run_li_pubsub("profile", "create", "frank", "--jid", "frank@example.org")
    status, out, __ = await run_li_pubsub("profile", "disconnect", "frank")
    assert (status, out) == (0, "profile frank: disconnected\n")
    status, out, __ = await run_li_pubsub("profile", "delete", "frank", "--yes",
                                          "--output", "json")
    assert (status, json.loads(out)) == (0, {"profile": "frank", "deleted": True})
    status, out, __ = await run_li_pubsub("profile", "list")
    assert out.startswith("(no profile: create one with")


# the default profile


@pytest_twisted.ensureDeferred
async def test_without_p_the_only_profile_is_used_and_several_need_a_choice(
    run_li_pubsub, monkeypatch
):
    status, __, err = await run_li_pubsub("pubsub", "cache", "stats")
    assert status == 1
    assert 'li profile create NAME --jid JID' in err

    for name in ("alice", "bob"):
        monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
        status, __, err = await run_li_pubsub("profile", "create", name, "--jid",
                                              f"{name}@example.org")
        assert status == 0, err
        if name == "alice":
            status, out, err = await run_li_pubsub("pubsub", "cache", "stats")
            assert status == 0, err
            assert out.splitlines() == ["nodes: 0", "items: 0", "size:  0 bytes"]

    status, __, err = await run_li_pubsub("pubsub", "cache", "stats")
    assert status == 2
    assert "several profiles exist (alice, bob)" in err
    monkeypatch.setenv("LIBERVIA_PROFILE", "bob")
    status, out, err = await run_li_pubsub("pubsub", "cache", "stats", "--output", "json")
    assert (status, err) == (0, "")
    assert json.loads(out) == {"nodes": 0, "nodes_by_state": {}, "items": 0, "bytes": 0}


@pytest_twisted.ensureDeferred
async def test_pubsub_of_a_disconnected_profile_says_to_connect_it(
    run_li_pubsub, monkeypatch
):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    await run_li_pubsub("profile", "create", "alice", "--jid", "alice@example.org")
    status, out, err = await run_li_pubsub("pubsub", "get", "-n", "news", "--output",
                                           "json")
    assert status == 1
    assert json.loads(out) == {"error": {
        "code": -32005, "type": "NotConnected",
        "message": "profile 'alice' is not connected: connect it first"}}
    assert err == ("li: error: profile 'alice' is not connected: connect it first "
                   "[NotConnected]\n")


@pytest_twisted.ensureDeferred
async def test_cache_reads_of_a_disconnected_profile_say_they_may_be_behind(
    run_li_pubsub, pubsub_backend, monkeypatch
):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    await run_li_pubsub("profile", "create", "alice", "--jid", "alice@example.org/pc")
    status, out, err = await run_li_pubsub("pubsub", "cache", "state", "-n", "news")
    assert (status, out) == (1, "")
    assert err == ("li: error: node 'news' of alice@example.org is not in the cache "
                   "[NotFound]\n")
    # what a synchronisation stored while the profile was connected
    storage = pubsub_backend.storage
    node = await storage.pubsub.set_pubsub_node(
        "alice", "alice@example.org", "news", sync_state=SyncState.COMPLETED)
    await storage.pubsub.cache_pubsub_items(node.id, [
        {"name": name, "data": f"<item xmlns='{NS_PUBSUB}' id='{name}'><x xmlns='t'/>"
         "</item>"} for name in ("a", "b")])

    status, out, err = await run_li_pubsub("pubsub", "cache", "state", "-n", "news")
    assert (status, err) == (0, "")
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["state"].strip() == "completed"
    assert fields["freshness"].strip() == (
        "offline (profile disconnected: may be behind the service)")
    assert fields["items"].strip() == "2 items"
    status, out, __ = await run_li_pubsub("pubsub", "cache", "state", "-n", "news",
                                          "--output", "json")
    state = json.loads(out)
    assert (state["state"], state["freshness"], state["served"], state["items"]) == (
        "completed", "offline", False, 2)

    status, out, err = await run_li_pubsub("pubsub", "cache", "get", "-n", "news",
                                           "-i", "b")
    assert (status, err) == (0, "")
    assert out.endswith("\n(1 item; from the cache; profile disconnected: may be "
                        "behind the service)\n")
    status, out, __ = await run_li_pubsub("pubsub", "cache", "get", "-n", "news",
                                          "--output", "json")
    answer = json.loads(out)
    assert len(answer["items"]) == 2
    assert (answer["metadata"]["cached"], answer["metadata"]["freshness"]) == (
        True, "offline")
    # the service itself can't be asked
    status, out, __ = await run_li_pubsub("pubsub", "get", "-n", "news")
    assert (status, out) == (1, "")


@pytest_twisted.ensureDeferred
async def test_cache_purge_needs_a_filter_or_all(run_li_pubsub, monkeypatch):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    await run_li_pubsub("profile", "create", "alice", "--jid", "alice@example.org")
    status, out, err = await run_li_pubsub("pubsub", "cache", "purge")
    assert (status, out) == (2, "")
    assert "add --all" in err
    status, out, __ = await run_li_pubsub("pubsub", "cache", "purge", "--all")
    assert (status, out) == (0, "0 cached items deleted\n")
    status, out, __ = await run_li_pubsub(
        "pubsub", "cache", "purge", "-t", "blog", "--updated-before", "2024-01-01",
        "--output", "json")
    assert (status, json.loads(out)) == (0, {"purged_items": 0})
    status, __, err = await run_li_pubsub("pubsub", "cache", "purge", "--created-before",
                                          "yesterday")
    assert status == 1 and "ISO 8601" in err
    status, out, __ = await run_li_pubsub("pubsub", "cache", "reset")
    assert (status, out) == (0, "0 cached nodes forgotten\n")


# item XML


ATOM = '<entry xmlns="http://www.w3.org/2005/Atom"><title>Hi</title></entry>'


def test_item_xml_wraps_a_payload_when_an_id_is_given():
    assert item_xml(f"  {ATOM}\n", None) == ATOM
    assert item_xml(ATOM, "a&b") == (
        '<item xmlns="http://jabber.org/protocol/pubsub" id="a&amp;b">' + ATOM + "</item>")


def test_item_xml_sets_the_id_of_an_item_element_and_drops_the_declaration():
    text = f'<?xml version="1.0" encoding="utf-8"?>\n<item>{ATOM}</item>'
    assert item_xml(text, "one") == f'<item id="one">{ATOM}</item>'
    prefixed = f'<ps:item xmlns:ps="http://jabber.org/protocol/pubsub">{ATOM}</ps:item>'
    assert item_xml(prefixed, "two").startswith('<ps:item id="two" xmlns:ps=')
    assert item_xml(f'<item id="one">{ATOM}</item>', "one") == f'<item id="one">{ATOM}</item>'


@pytest.mark.parametrize("text, message", [
    ("<entry>", "not well-formed XML"),
    ("", "the item is empty"),
    (f'<item id="one">{ATOM}</item>', "give only one"),
])
def test_item_xml_refuses_what_cannot_be_published(text, message):
    from libervia.cli.base import CommandError

    with pytest.raises(CommandError, match=message):
        item_xml(text, "two")


def test_indent_keeps_text_and_mixed_content_as_written():
    text = ('<item id="1"><entry xmlns="http://www.w3.org/2005/Atom"><title> Hi </title>'
            '<content type="xhtml"><div>a <b>b</b> c</div></content><link/></entry></item>')
    assert indent(text).splitlines() == [
        '<item id="1">',
        '  <entry xmlns="http://www.w3.org/2005/Atom">',
        "    <title> Hi </title>",
        '    <content type="xhtml">',
        "      <div>a <b>b</b> c</div>",
        "    </content>",
        "    <link/>",
        "  </entry>",
        "</item>",
    ]
    with pytest.raises(XMLError, match="line 1"):
        indent("<a><b></a>")


# progress of a sync


class FakeContext:
    def __init__(self, tty: bool) -> None:
        self.err = Stderr(tty=tty)


def signal(node="news", profile="alice", state="in_progress", done=0, expected=None):
    return {"profile": profile, "service": "pubsub.example.org", "node": node,
            "state": state, "done": done, "expected": expected}


def test_progress_is_a_bar_on_a_terminal():
    ctx = FakeContext(tty=True)
    progress = Progress(ctx, "alice", "news")
    progress("cache_sync_progress", signal(done=0))
    progress("cache_sync_progress", signal(done=5, expected=20))
    progress("cache_sync_progress", signal(node="other", done=1, expected=1))
    progress("cache_sync_progress", signal(state="completed", done=20, expected=20))
    progress.finish()
    drawn = ctx.err.getvalue()
    assert drawn.count("\r") == 3
    assert "[#######-----------------------] 5 of 20 items (synchronising)" in drawn
    assert drawn.endswith("[" + "#" * 30 + "] 20 of 20 items (completed)\n")
    assert "other" not in drawn


def test_progress_is_a_few_plain_lines_otherwise():
    ctx = FakeContext(tty=False)
    progress = Progress(ctx, "alice", "news")
    progress("cache_sync_progress", signal(done=0))
    for done in range(0, 101):
        progress("cache_sync_progress", signal(done=done, expected=100))
    progress("cache_sync_progress", signal(profile="bob", done=1))
    progress("cache_sync_progress", signal(state="completed", done=100, expected=100))
    progress.finish()
    lines = ctx.err.getvalue().splitlines()
    assert "\r" not in ctx.err.getvalue()
    assert lines[0] == "li: sync of news: synchronising, 0 items"
    assert lines[-1] == "li: sync of news: completed, 100 of 100 items"
    assert 10 <= len(lines) <= 13


def test_li_modules_import_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys\nimport libervia.cli.main as m\n"
            "for name in ('profile', 'pubsub'):\n"
            "    __import__('libervia.cli.commands.' + name)\n"
            "m.build_parser()\n"
            "heavy = [n for n in sys.modules if n.split('.')[0] in "
            "('twisted', 'typing', 'xml', 'getpass', 'importlib', 'sqlalchemy')"
            " and n != 'importlib' and not n.startswith('importlib._')]\n"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.stdout.strip() == "[]"


def test_only_the_command_being_run_is_built():
    def child(parser, name):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]

    def options(parser):
        return {o for a in parser._actions for o in a.option_strings}

    argv = ["--output", "json", "pubsub", "get", "-n", "cache", "-M", "3"]
    lean = build_parser(path=["pubsub", "get", "cache"])
    pubsub = child(lean, "pubsub")
    assert {"-n", "-M", "--output"} <= options(child(pubsub, "get"))
    # siblings are bare names: listed, not built
    assert options(child(pubsub, "cache")) == {"-h", "--help"}
    assert options(child(pubsub, "node")) == {"-h", "--help"}
    assert options(child(lean, "profile")) == {"-h", "--help"}
    assert vars(lean.parse_args(argv)) == vars(build_parser().parse_args(argv))


@pytest_twisted.ensureDeferred
async def test_completion_proposes_the_profiles_of_the_running_backend(
    run_li_pubsub, pubsub_backend, monkeypatch
):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from twisted.internet import threads

    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    for name in ("alice", "albert", "bob"):
        monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
        status, __, err = await run_li_pubsub("profile", "create", name, "--jid",
                                              f"{name}@example.org")
        assert status == 0, err
    script = completion.bash_script(build_parser())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "LIBERVIA_BRIDGE_SOCKET": str(pubsub_backend.getServiceNamed("bridge").path)}

    def complete(*words):
        quoted = " ".join(f"'{w}'" for w in ("li", *words))
        test = (f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words)}\n"
                "_li; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
        # in a thread: li asks the backend, which answers from this thread's reactor
        result = threads.deferToThread(
            subprocess.run, ["bash", "-c", test], capture_output=True, text=True,
            env=env, check=True)
        return result.addCallback(lambda r: sorted(r.stdout.split()))

    assert await complete("pubsub", "get", "-p", "al") == ["albert", "alice"]
    assert await complete("profile", "connect", "b") == ["bob"]
    assert await complete("profile", "info", "--o") == ["--output"]
    assert await complete("profile", "create", "b") == []  # a new name: nothing to propose


@pytest_twisted.ensureDeferred
async def test_cache_search_sends_the_query_and_shows_the_page(
    run_li_pubsub, pubsub_backend, monkeypatch
):
    monkeypatch.setattr("sys.stdin", Stdin(SECRET + "\n"))
    await run_li_pubsub("profile", "create", "alice", "--jid", "alice@example.org")
    from libervia.backend.memory.storage import Condition, Order

    queries = []
    search_items = pubsub_backend.storage.search.search_items

    def spy(query):
        queries.append(query)
        return search_items(query)

    monkeypatch.setattr(pubsub_backend.storage.search, "search_items", spy)
    status, out, err = await run_li_pubsub(
        "pubsub", "cache", "search", "-f", "xmpp cache", "-F", "published", ">=",
        "2024-01-01", "-F", "categories", "overlap", '["xmpp", "python"]', "-F",
        "rating", "==", "5", "-t", "blog", "-s", "pubsub.example.org", "-A", "XEP-0277",
        "-o", "rank", "-o", "path", "published", "desc", "-l", "10", "-i", "20")
    assert (status, err) == (0, ""), err
    [query] = queries
    assert (query.profiles, query.fts, query.types, query.services, query.analysers) == (
        ("alice",), "xmpp cache", ("blog",), ("pubsub.example.org",), ("XEP-0277",))
    assert (query.limit, query.index, query.payload) == (10, 20, False)
    # -F values are JSON when they parse as JSON, text otherwise
    assert query.conditions == (
        Condition.make("published", ">=", "2024-01-01"),
        Condition.make("categories", "overlap", ["xmpp", "python"]),
        Condition.make("rating", "==", 5),
    )
    assert query.order == (Order("rank", True), Order("path", True, ("published",)))
    assert out == "(no item found)\n(no item of 0)\n"

    status, out, err = await run_li_pubsub("pubsub", "cache", "search", "-o", "rank",
                                           "--output", "json")
    assert status == 1
    error = json.loads(out)["error"]
    assert error["type"] == "InvalidQuery" and "fts" in error["message"]


@pytest_twisted.ensureDeferred
async def test_hostile_profile_names_get_profile_not_found_from_every_method(
    pubsub_backend
):
    """Names no profile can have (empty, NUL, path, 10,000 characters) are answered
    ProfileNotFound, with a message of bounded length, before any method runs."""
    bridge = pubsub_backend.bridge
    calls = [("pubsub_get", {"service": None, "node": "news"}),
             ("cache_stats", {}), ("cache_reset", {}),
             ("cache_search", {"query": {"text": "x"}}),
             ("pubsub_subscriptions", {"service": None})]
    for name in ("", "\x00", "../../etc/passwd", "a b", "é" * 10_000, "alice\n"):
        for method, params in calls:
            with pytest.raises(ProfileNotFound) as caught:
                await bridge.call(method, {"profile": name, **params})
            assert len(str(caught.value)) < 120, (method, name[:10])
    await pubsub_backend.profiles.create("alice", "alice@example.org", SECRET)
    assert await bridge.call("cache_stats", {"profile": "alice"}) == {
        "nodes": 0, "nodes_by_state": {}, "items": 0, "bytes": 0}
