"""The Backend: its start-up waits for the reactor, its readiness, its exit status, and
the protocols it implements."""

from types import SimpleNamespace

import pytest
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock

from libervia.backend.app.main import Backend, PluginService
from libervia.backend.core import interfaces
from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import StartupError
from libervia.backend.core.interfaces import Clients, Host, Unload
from libervia.backend.xmpp.clients import ConnectionHost
from libervia.backend.xmpp.profiles import StorageHost
from tests.unit.service_support import Step, collect


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


def test_the_backend_fits_the_protocols_of_the_host_and_its_parts(tmp_path):
    backend = make_backend(tmp_path)
    assert isinstance(backend, Host)
    assert isinstance(backend, StorageHost)
    assert isinstance(backend, ConnectionHost)
    assert isinstance(backend.bridge, interfaces.Bridge)
    assert isinstance(backend.clients, Clients)


class Unloadable:
    def __init__(self, name, journal):
        self.name = name
        self.journal = journal

    async def unload(self):
        self.journal.append(self.name)


def test_plugins_implementing_unload_are_unloaded_last_loaded_first():
    journal = []
    plugins = {"A": Unloadable("A", journal), "PLAIN": object(),
               "B": Unloadable("B", journal)}
    assert isinstance(plugins["A"], Unload) and not isinstance(plugins["PLAIN"], Unload)
    plugin_service = PluginService(SimpleNamespace(plugins=plugins))
    assert collect(plugin_service.stopService()) == [None]
    assert journal == ["B", "A"]
