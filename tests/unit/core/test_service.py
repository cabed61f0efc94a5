"""Start-up order of the backend's services, and the Backend's readiness."""

import pytest
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock

from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import StartupError
from libervia.backend.core.main import Backend
from libervia.backend.core.service import AsyncMultiService


class Step(service.Service):
    """A child whose start and stop end when the test says so."""

    def __init__(self, name, journal):
        self.setName(name)
        self.journal = journal
        self.start_d = defer.Deferred()
        self.stop_d = defer.Deferred()

    def startService(self):
        super().startService()
        self.journal.append(f"start {self.name}")
        return self.start_d

    def stopService(self):
        super().stopService()
        self.journal.append(f"stop {self.name}")
        return self.stop_d


def collect(d):
    results = []
    d.addBoth(results.append)
    return results


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


def running_reactor():
    reactor = MemoryReactorClock()
    reactor.running = True
    return reactor


def make_backend(tmp_path, reactor=None):
    config = Config.from_dict({"DEFAULT": {"local_dir": str(tmp_path)}})
    backend = Backend(config, reactor=reactor or running_reactor(), plugin_entry_points=[])
    # the storage runs on threads, which a memory reactor can't serve, and the profiles
    # need the storage; both have their own tests (tests/unit/storage, test_profiles)
    for name in ("storage", "profiles"):
        backend.removeService(backend.getServiceNamed(name))
    return backend


def test_backend_start_waits_for_the_reactor(tmp_path):
    """twistd starts services before the reactor runs: nothing happens until it does."""
    reactor = MemoryReactorClock()
    backend = make_backend(tmp_path, reactor)
    journal = []
    Step("extra", journal).setServiceParent(backend)
    backend.startService()
    assert journal == []
    reactor.run()
    assert journal == ["start extra"]


def test_backend_when_ready_fires_after_every_part_started(tmp_path):
    backend = make_backend(tmp_path)
    journal = []
    extra = Step("extra", journal)
    extra.setServiceParent(backend)
    early = collect(backend.when_ready())
    backend.startService()
    assert early == [] and backend.status == "starting"
    extra.start_d.callback(None)
    assert early == [backend]
    assert backend.is_ready and backend.status == "ready"
    assert collect(backend.when_ready()) == [backend]


def test_backend_start_failure_stops_the_reactor_with_status_1(tmp_path):
    reactor = running_reactor()
    backend = make_backend(tmp_path, reactor)
    failing = Step("storage", [])
    failing.setServiceParent(backend)
    waiter = collect(backend.when_ready())
    backend.startService()
    failing.start_d.errback(StartupError("database revision abc is newer"))
    assert backend.exit_status == 1
    assert backend.status == "failed"
    assert reactor.hasStopped
    assert waiter[0].check(StartupError)
    late = collect(backend.when_ready())
    assert late[0].check(StartupError)
    for result in waiter + late:  # consumed
        result.trap(StartupError)


def test_backend_status_changes_reach_the_trigger(tmp_path):
    backend = make_backend(tmp_path)
    seen = []
    backend.trigger.add("backend_status", lambda status: seen.append(status) or True)
    backend.startService()
    collect(backend.stopService())
    assert seen == ["starting", "ready", "stopping", "stopped"]


@pytest.mark.parametrize("disabled", [["XEP-0059"], []])
def test_backend_passes_disabled_plugins_to_the_loader(tmp_path, disabled):
    config = Config.from_dict({"DEFAULT": {"plugins_disabled": disabled}})
    backend = Backend(config, reactor=task.Clock())
    assert backend.plugin_manager.disabled == frozenset(disabled)
