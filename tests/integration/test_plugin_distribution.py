"""A plugin from another installed distribution is found through the entry point."""

import sys

import pytest_twisted
from twisted.internet import task

from libervia.backend.app.main import Backend
from libervia.backend.core.config import Config
from libervia.backend.core.plugins import PluginState


@pytest_twisted.ensureDeferred
async def test_third_party_plugin_is_discovered_loaded_and_hooked(
    test_plugin_site, monkeypatch, tmp_path
):
    monkeypatch.syspath_prepend(str(test_plugin_site))
    monkeypatch.delitem(sys.modules, "libervia_test_plugin", raising=False)
    config = Config.from_dict({"DEFAULT": {"local_dir": str(tmp_path)}})
    backend = Backend(config, reactor=task.Clock())
    manager = backend.plugin_manager
    await manager.load_all()

    record = manager.records["TEST-PLUGIN"]
    assert record.state is PluginState.LOADED
    assert (record.distribution, record.version) == ("libervia-test-plugin", "0.3.1")
    own = manager.records["XEP-0059"]
    assert own.distribution == "libervia-backend"
    # the dependency was loaded before the plugin
    assert list(manager.plugins).index("XEP-0059") < list(manager.plugins).index("TEST-PLUGIN")
    # its trigger is called by the backend
    plugin = manager.plugins["TEST-PLUGIN"]
    backend.set_status("testing")
    assert plugin.statuses == ["testing"]
    report = {r["import_name"]: r for r in manager.report()}
    assert report["TEST-PLUGIN"]["distribution"] == "libervia-test-plugin"


@pytest_twisted.ensureDeferred
async def test_disabled_third_party_plugin_is_not_imported(
    test_plugin_site, monkeypatch, tmp_path
):
    monkeypatch.syspath_prepend(str(test_plugin_site))
    monkeypatch.delitem(sys.modules, "libervia_test_plugin", raising=False)
    config = Config.from_dict({"DEFAULT": {"plugins_disabled": "TEST-PLUGIN"}})
    backend = Backend(config, reactor=task.Clock())
    await backend.plugin_manager.load_all()
    assert backend.plugin_manager.records["TEST-PLUGIN"].state is PluginState.DISABLED
    assert "libervia_test_plugin" not in sys.modules
