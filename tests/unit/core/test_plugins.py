"""Plugin loader: dependency order, missing dependencies, failures, duplicates."""

import sys
import types
from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import defer, task

from libervia.backend.core.exceptions import PluginError
from libervia.backend.core.plugins import PluginInfo, PluginManager, PluginState


@dataclass
class FakeDist:
    name: str
    version: str

    @property
    def metadata(self):
        return {"Name": self.name}


class FakeEntryPoint:
    """Just what the loader reads from an importlib.metadata.EntryPoint."""

    def __init__(self, name, module_name, dist=("third-party-dist", "1.2")):
        self.name = name
        self.value = module_name
        self.dist = FakeDist(*dist) if dist else None

    def load(self):
        __import__(self.value)
        return sys.modules[self.value]


class Host:
    def __init__(self):
        self.events = []


def make_plugin(monkeypatch, import_name, *, deps=(), recos=(), init=None, async_init=None,
                info_overrides=None, module_name=None):
    """Register a plugin module in sys.modules and return its entry point."""
    module_name = module_name or f"fake_plugin_{import_name.replace('-', '_').lower()}"
    module = types.ModuleType(module_name)

    class Main:
        def __init__(self, host):
            self.host = host
            host.events.append(("init", import_name))
            if init is not None:
                init(host)

    if async_init is not None:
        Main.async_init = lambda self: async_init(self.host)

    info = {
        "name": f"Plugin {import_name}",
        "import_name": import_name,
        "type": "XEP",
        "main": "Main",
        "dependencies": list(deps),
        "recommendations": list(recos),
        "description": "test plugin",
    }
    info.update(info_overrides or {})
    module.PLUGIN_INFO = info
    module.Main = Main
    monkeypatch.setitem(sys.modules, module_name, module)
    return FakeEntryPoint(import_name, module_name)


def load(entry_points, disabled=(), reactor=None):
    host = Host()
    manager = PluginManager(host, disabled=disabled, entry_points=entry_points,
                            reactor=reactor or task.Clock())
    d = defer.ensureDeferred(manager.load_all())
    return host, manager, d


def loaded_now(entry_points, **kwargs):
    host, manager, d = load(entry_points, **kwargs)
    results = []
    d.addBoth(results.append)
    assert results and isinstance(results[0], dict), results
    return host, manager


def test_dependencies_are_loaded_first(monkeypatch):
    eps = [
        make_plugin(monkeypatch, "C", deps=["B"]),
        make_plugin(monkeypatch, "A"),
        make_plugin(monkeypatch, "B", deps=["A"]),
        make_plugin(monkeypatch, "D", recos=["C"]),
    ]
    host, manager = loaded_now(eps)
    assert [e[1] for e in host.events] == ["A", "B", "C", "D"]
    assert list(manager.plugins) == ["A", "B", "C", "D"]
    assert manager.get("B").host is host


def test_recommendation_present_is_loaded_first_missing_only_warns(monkeypatch):
    eps = [
        make_plugin(monkeypatch, "A", recos=["Z", "NOT-INSTALLED"]),
        make_plugin(monkeypatch, "Z"),
    ]
    host, manager = loaded_now(eps)
    assert [e[1] for e in host.events] == ["Z", "A"]
    assert manager.records["A"].state is PluginState.LOADED


def test_missing_dependency_skips_plugin_and_its_dependents(monkeypatch):
    eps = [
        make_plugin(monkeypatch, "A", deps=["MISSING"]),
        make_plugin(monkeypatch, "B", deps=["A"]),
        make_plugin(monkeypatch, "C"),
    ]
    __, manager = loaded_now(eps)
    assert list(manager.plugins) == ["C"]
    assert manager.records["A"].state is PluginState.SKIPPED
    assert "missing dependency MISSING (not installed)" in manager.records["A"].reason
    assert manager.records["B"].state is PluginState.SKIPPED
    assert "missing dependency A (skipped)" in manager.records["B"].reason


def test_plugin_raising_in_init_never_stops_the_backend(monkeypatch):
    def boom(host):
        raise RuntimeError("plugin bug")

    eps = [
        make_plugin(monkeypatch, "BROKEN", init=boom),
        make_plugin(monkeypatch, "NEEDS-BROKEN", deps=["BROKEN"]),
        make_plugin(monkeypatch, "FINE"),
    ]
    __, manager = loaded_now(eps)
    assert list(manager.plugins) == ["FINE"]
    assert manager.records["BROKEN"].state is PluginState.FAILED
    assert "plugin bug" in manager.records["BROKEN"].reason
    assert manager.records["NEEDS-BROKEN"].state is PluginState.SKIPPED


def test_plugin_failing_to_import(monkeypatch):
    eps = [FakeEntryPoint("GHOST", "module_that_does_not_exist_anywhere"),
           make_plugin(monkeypatch, "OK")]
    __, manager = loaded_now(eps)
    assert manager.records["GHOST"].state is PluginState.FAILED
    assert "import failed" in manager.records["GHOST"].reason
    assert list(manager.plugins) == ["OK"]


def test_async_init_of_each_kind_is_awaited(monkeypatch):
    clock = task.Clock()
    order = []

    async def coroutine_init(host):
        order.append("coroutine")

    def deferred_init(host):
        return task.deferLater(clock, 1, order.append, "deferred")

    eps = [
        make_plugin(monkeypatch, "A", async_init=coroutine_init),
        make_plugin(monkeypatch, "B", deps=["A"], async_init=deferred_init),
        make_plugin(monkeypatch, "C", deps=["B"], init=lambda h: order.append("C")),
    ]
    host, manager, d = load(eps, reactor=clock)
    assert order == ["coroutine"]  # B waits for its clock
    assert not d.called
    clock.advance(1)
    assert order == ["coroutine", "deferred", "C"]
    assert d.called and list(manager.plugins) == ["A", "B", "C"]


def test_async_init_that_never_answers_times_out(monkeypatch):
    clock = task.Clock()
    eps = [
        make_plugin(monkeypatch, "HANGS", async_init=lambda host: defer.Deferred()),
        make_plugin(monkeypatch, "AFTER"),
    ]
    __, manager, d = load(eps, reactor=clock)
    assert not d.called
    clock.advance(manager.init_timeout + 1)
    assert d.called
    assert manager.records["HANGS"].state is PluginState.FAILED
    assert list(manager.plugins) == ["AFTER"]


def test_failing_async_init(monkeypatch):
    async def fails(host):
        raise ValueError("cannot init")

    __, manager = loaded_now([make_plugin(monkeypatch, "F", async_init=fails)])
    assert manager.records["F"].state is PluginState.FAILED
    assert "cannot init" in manager.records["F"].reason


def test_duplicate_import_names_are_refused(monkeypatch):
    first = make_plugin(monkeypatch, "DUP", module_name="dup_one")
    second = make_plugin(monkeypatch, "DUP", module_name="dup_two")
    second.dist = FakeDist("another-dist", "3.0")
    __, manager = loaded_now([first, second, make_plugin(monkeypatch, "OTHER")])
    assert "DUP" not in manager.plugins
    assert manager.records["DUP"].state is PluginState.REFUSED
    assert "duplicate import name" in manager.records["DUP"].reason
    assert "another-dist" in manager.records["DUP"].reason
    assert list(manager.plugins) == ["OTHER"]


def test_duplicate_of_an_own_plugin_keeps_the_own_one(monkeypatch):
    own = make_plugin(monkeypatch, "XEP-0001", module_name="own_plugin")
    own.dist = FakeDist("libervia-backend", "1.0")
    intruder = make_plugin(monkeypatch, "XEP-0001", module_name="intruder_plugin")
    __, manager = loaded_now([intruder, own])
    assert manager.records["XEP-0001"].entry_point == "own_plugin"
    assert manager.records["XEP-0001"].state is PluginState.LOADED


def test_disabled_plugin_is_not_imported_and_dependents_skip(monkeypatch):
    eps = [FakeEntryPoint("OFF", "module_that_would_fail_to_import"),
           make_plugin(monkeypatch, "USER", deps=["OFF"])]
    __, manager = loaded_now(eps, disabled=["OFF"])
    assert manager.records["OFF"].state is PluginState.DISABLED
    assert manager.records["USER"].state is PluginState.SKIPPED
    assert "disabled" in manager.records["USER"].reason


def test_dependency_cycle_is_refused(monkeypatch):
    eps = [
        make_plugin(monkeypatch, "A", deps=["B"]),
        make_plugin(monkeypatch, "B", deps=["A"]),
        make_plugin(monkeypatch, "C"),
    ]
    __, manager = loaded_now(eps)
    assert manager.records["A"].state is PluginState.REFUSED
    assert "cycle" in manager.records["A"].reason
    assert list(manager.plugins) == ["C"]


def test_entry_point_name_must_match_import_name(monkeypatch):
    ep = make_plugin(monkeypatch, "REAL")
    ep.name = "ALIAS"
    __, manager = loaded_now([ep])
    assert manager.records["ALIAS"].state is PluginState.REFUSED
    assert "must be equal" in manager.records["ALIAS"].reason


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"import_name": ""}, "import_name"),
        ({"main": "Nope"}, "not a class"),
        ({"dependencies": "A B"}, None),  # a single string is accepted as one name
        ({"dependencies": [1]}, "list of strings"),
        ({"modes": ["server"]}, "unknown mode"),
        ({"handler": "maybe"}, "boolean"),
        ({"features": [1]}, "list of strings"),
        ({"notify": {"a": "b"}}, "list of strings"),
    ],
)
def test_invalid_plugin_info_is_refused(monkeypatch, overrides, message):
    ep = make_plugin(monkeypatch, "BAD", info_overrides=overrides)
    if overrides.get("import_name") == "":
        ep.name = "BAD"
    __, manager = loaded_now([ep])
    record = manager.records["BAD"]
    if message is None:
        assert record.state is PluginState.SKIPPED  # dependency "A B" is not installed
    else:
        assert record.state is PluginState.REFUSED
        assert message in record.reason


def test_plugin_info_accepts_libervia_handler_strings():
    info = PluginInfo.from_dict(
        {"name": "n", "import_name": "i", "type": "XEP", "main": "M", "handler": "yes"}
    )
    assert info.handler is True
    with pytest.raises(PluginError):
        PluginInfo.from_dict(["not", "a", "dict"])


def test_loaded_plugins_declare_their_features_and_notify_interests(monkeypatch):
    eps = [make_plugin(monkeypatch, "A", info_overrides={
               "features": ["urn:a"], "notify": "urn:node"}),
           make_plugin(monkeypatch, "B", deps=["X"], info_overrides={
               "features": ["urn:b"]})]
    __, manager = loaded_now(eps)
    assert [(i.import_name, i.features, i.notify) for i in manager.loaded_infos()] == [
        ("A", ("urn:a",), ("urn:node",))]
    assert manager.report()[0]["features"] == ["urn:a"]
    assert manager.report()[0]["notify"] == ["urn:node"]


def test_report_lists_distribution_version_and_state(monkeypatch):
    eps = [make_plugin(monkeypatch, "A"), make_plugin(monkeypatch, "B", deps=["X"])]
    __, manager = loaded_now(eps)
    report = manager.report()
    assert [r["import_name"] for r in report] == ["A", "B"]
    assert report[0]["distribution"] == "third-party-dist"
    assert report[0]["version"] == "1.2"
    assert report[0]["state"] == "loaded"
    assert report[1]["state"] == "skipped"


@pytest_twisted.ensureDeferred
async def test_installed_own_plugins_load_through_entry_points():
    """The backend's own plugins are found through the real entry point group."""
    manager = PluginManager(Host(), reactor=task.Clock())
    await manager.load_all()
    record = manager.records["XEP-0059"]
    assert record.state is PluginState.LOADED
    assert record.distribution == "libervia-backend"
    assert record.entry_point == "libervia.backend.plugins.plugin_xep_0059"
