"""The bridge inside the Backend: created early, started after the plugins."""

import importlib.metadata

import pytest_twisted
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface.verify import verifyObject

from libervia.backend.app.main import Backend
from libervia.backend.core.constants import C
from tests.unit.bridge.helpers import Client


def test_bridge_starts_after_the_plugins(backend):
    names = [service.name for service in backend]
    assert names.index("bridge") > names.index("plugins")


def test_protocol_is_a_push_producer(client):
    assert verifyObject(IPushProducer, client.protocol)


@pytest_twisted.ensureDeferred
async def test_plugin_registers_methods_and_signals_in_its_init(backend, factory):
    sample = importlib.metadata.EntryPoint(
        name="BRIDGE-SAMPLE", value="tests.unit.bridge.sample_plugin",
        group=C.PLUGINS_ENTRY_POINT_GROUP,
    )
    backend = Backend(backend.config, reactor=backend.reactor, plugin_entry_points=[sample])
    await defer.ensureDeferred(backend.plugin_manager.load_all())
    assert "BRIDGE-SAMPLE" in backend.plugins
    factory.bridge = backend.bridge
    backend.bridge.factory = factory
    client = Client(factory)
    client.call("subscribe", request_id=1, signals=["sample.echoed"])
    client.call("sample.echo", request_id=2, text="hi")
    assert client.received() == [
        {"jsonrpc": "2.0", "result": ["sample.echoed"], "id": 1},
        {"jsonrpc": "2.0", "method": "sample.echoed", "params": {"text": "hi"}},
        {"jsonrpc": "2.0", "result": "hi", "id": 2},
    ]
    client.call("bridge_info", request_id=3)
    info = client.answer()["result"]
    assert info["methods"]["sample.echo"] == "Return the text, and signal it."
    assert info["signals"]["sample.echoed"] == "an echo was made"
