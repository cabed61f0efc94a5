"""Start-up order of a service collection whose children start one after the other."""

from twisted.internet import defer

from libervia.backend.core.exceptions import StartupError
from libervia.backend.core.service import AsyncMultiService
from tests.unit.service_support import Step, collect


def test_children_start_one_after_the_other_and_stop_in_reverse():
    journal = []
    parent = AsyncMultiService()
    a, b, c = (Step(n, journal) for n in "abc")
    for child in (a, b, c):
        child.setServiceParent(parent)
    started = collect(parent.startService())
    assert journal == ["start a"]
    a.start_d.callback(None)
    assert journal == ["start a", "start b"]
    b.start_d.callback(None)
    c.start_d.callback(None)
    assert started == [None]

    stopped = collect(parent.stopService())
    assert journal[3:] == ["stop c"]
    c.stop_d.callback(None)
    assert journal[3:] == ["stop c", "stop b"]
    b.stop_d.callback(None)
    assert not stopped
    a.stop_d.callback(None)
    assert stopped == [None]


def test_failed_start_stops_what_was_started_and_fails():
    journal = []
    parent = AsyncMultiService()
    a, b, c = (Step(n, journal) for n in "abc")
    for child in (a, b, c):
        child.setServiceParent(parent)
    a.stop_d.callback(None)
    started = collect(parent.startService())
    a.start_d.callback(None)
    b.start_d.errback(StartupError("no database"))
    assert journal == ["start a", "start b", "stop a"]
    assert started[0].check(StartupError)
    assert not parent.running


def test_stop_during_start_cancels_the_pending_child():
    journal = []
    parent = AsyncMultiService()
    a, b = Step("a", journal), Step("b", journal)
    a.setServiceParent(parent)
    b.setServiceParent(parent)
    a.stop_d.callback(None)
    started = collect(parent.startService())
    a.start_d.callback(None)
    stopped = collect(parent.stopService())
    assert started[0].check(defer.CancelledError)
    assert journal == ["start a", "start b", "stop a"]
    assert stopped == [None]


def test_error_while_stopping_one_child_still_stops_the_others():
    journal = []
    parent = AsyncMultiService()
    a, b = Step("a", journal), Step("b", journal)
    a.setServiceParent(parent)
    b.setServiceParent(parent)
    a.start_d.callback(None)
    b.start_d.callback(None)
    parent.startService()
    b.stop_d.errback(RuntimeError("stop failed"))
    a.stop_d.callback(None)
    assert collect(parent.stopService()) == [None]
    assert journal[-2:] == ["stop b", "stop a"]
