"""What li says to people: "did you mean", plurals, state names, search scores, and how
to start a backend that is not running."""

import pytest

from libervia.cli import output
from libervia.cli.commands.pubsub.cache import items_done, relative_scores
from libervia.cli.main import did_you_mean
from tests.unit.cli.conftest import run_li_sync

# "did you mean"


@pytest.mark.parametrize("argv, wanted", [
    (["pubsb", "get"], "did you mean 'pubsub'?"),
    (["pubsub", "gte", "-n", "x"], "did you mean 'get'?"),
    (["pubsub", "cache", "serch"], "did you mean 'search'?"),
    (["profile", "modfy", "alice"], "did you mean 'modify'?"),
    (["backend", "stauts"], "did you mean 'status'?"),
    (["--output", "jsn", "backend", "status"], "did you mean 'json'?"),
    (["pubsub", "get", "-n", "x", "--servce", "pubsub.example.org"],
     "did you mean '--service'?"),
])
def test_a_mistyped_command_choice_or_option_gets_a_suggestion(li_env, capsys, argv,
                                                                 wanted):
    status, out, __ = run_li_sync(*argv)
    err = capsys.readouterr().err
    assert (status, out) == (2, "")
    assert wanted in err
    assert "Traceback" not in err


def test_nothing_is_suggested_for_a_word_close_to_no_command(li_env, capsys):
    status, __, __ = run_li_sync("xyzzy")
    err = capsys.readouterr().err
    assert status == 2
    assert "invalid choice: 'xyzzy'" in err and "did you mean" not in err


def test_did_you_mean_keeps_the_closest_names_only():
    assert did_you_mean("stats", ["state", "stats", "sync"]) == (
        " (did you mean 'stats' or 'state'?)")
    assert did_you_mean("--nod", ["--node", "--no-cache", "--output"], most=1) == (
        " (did you mean '--node'?)")
    assert did_you_mean("", ["get"]) == ""


# words for people


@pytest.mark.parametrize("number, text", [
    (0, "0 items"), (1, "1 item"), (2, "2 items"), (1000, "1000 items")])
def test_counts_agree_with_their_number(number, text):
    assert output.count(number, "item") == text


def test_irregular_plurals_can_be_given():
    assert output.count(1, "entry", "entries") == "1 entry"
    assert output.count(3, "entry", "entries") == "3 entries"


@pytest.mark.parametrize("name, text", [
    ("in_progress", "synchronising"), ("no_sync", "not to synchronise"),
    ("none", "not synchronised yet"), ("error", "failed"), ("completed", "completed"),
    ("some_new_state", "some new state"), (None, "None")])
def test_state_names_are_shown_as_words(name, text):
    assert output.state(name) == text


def test_items_done_reads_as_a_sentence():
    assert items_done(1, 1) == "1 of 1 item"
    assert items_done(3, 10) == "3 of 10 items"
    assert items_done(1, None) == "1 item"
    assert items_done(0, 0) == "0 items"


def test_search_ranks_are_shown_relative_to_the_best():
    # SQLite's bm25 on a small cache: tiny numbers that say nothing as such
    assert relative_scores([2e-06, 1e-06, None, 0.5e-06]) == ["100%", "50%", None, "25%"]
    assert relative_scores([None, None]) == [None, None]
    # ranks that can't be compared (all zero) are not made up
    assert relative_scores([0.0, 0.0]) == ["-", "-"]


# the backend is not running


def test_backend_not_running_names_the_ways_to_start_it(li_env, socket_dir):
    status, out, err = run_li_sync("--socket", str(socket_dir / "none.sock"),
                                   "backend", "status")
    assert (status, out) == (1, "")
    for way in ("tools/run-backend", "libervia-backend", "twistd -n",
                "systemctl --user start libervia-backend"):
        assert way in err, way
