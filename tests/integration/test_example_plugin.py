"""The example third-party plugin (examples/libervia-plugin-recipes), installed for real.

It is found through the entry point, its trigger refuses bad recipes before anything
reaches the server, and its analyser makes the pubsub cache synchronise a recipes node
and store the parsed recipes.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from libervia.backend.app.main import Backend
from libervia.backend.core.config import Config
from libervia.backend.core.plugins import PluginState
from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.memory.sqla_mapping import SyncState
from libervia.backend.xmpp.profiles import ConnectionOptions

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "libervia-plugin-recipes"

RECIPE = (
    "<item xmlns='http://jabber.org/protocol/pubsub' id='{id}'>"
    "<recipe xmlns='urn:example:recipe:0'><title>{title}</title>"
    "<time unit='{unit}'>{time}</time>{ingredients}</recipe></item>"
)


def recipe(item_id, title, time, unit, *ingredients):
    return parse_xml(RECIPE.format(
        id=item_id, title=title, time=time, unit=unit,
        ingredients="".join(f"<ingredient>{i}</ingredient>" for i in ingredients)))


@pytest.fixture(scope="module")
def recipes_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("recipes-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, cwd=tmp_path_factory.mktemp("build"),
    )
    return target


@pytest.fixture
def backend(recipes_site, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(recipes_site))
    for name in list(sys.modules):
        if name.startswith("libervia_recipes"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with tempfile.TemporaryDirectory(prefix="lrp-") as socket_dir:
        config = Config.from_dict({
            "DEFAULT": {"local_dir": tmp_path / "local"},
            "bridge": {"socket": Path(socket_dir) / "bridge.sock"},
        })
        backend = Backend(config, reactor=reactor)
        pytest_twisted.blockon(backend.startService())
        yield backend
        pytest_twisted.blockon(backend.stopService())


def test_the_example_plugin_is_loaded_from_its_distribution(backend):
    record = backend.plugin_manager.records["RECIPES"]
    assert record.state is PluginState.LOADED, record.reason
    assert (record.distribution, record.version) == ("libervia-plugin-recipes", "1.0.0")
    assert "recipes" in backend.plugins["PUBSUB_CACHE"].analysers


@pytest_twisted.ensureDeferred
async def test_recipes_are_checked_cached_and_parsed(backend, prosody_server):
    admin = prosody_server.admin  # creating nodes on the component needs an admin
    await backend.profiles.create(
        "cook", admin.jid, admin.password,
        ConnectionOptions(host=prosody_server.address, port=prosody_server.c2s_port,
                          ca_file=str(prosody_server.ca_file)))
    client = await backend.clients.connect("cook")
    xep_0060 = backend.plugins["XEP-0060"]
    cache = backend.plugins["PUBSUB_CACHE"]
    service = prosody_server.pubsub_service
    node = f"recipes-{id(backend)}"
    await xep_0060.create_node(client, service, node, {"pubsub#max_items": "100"})

    # the trigger refuses a recipe without title, before anything is sent
    with pytest.raises(Exception, match="has no title"):
        await xep_0060.publish(client, service, node, [recipe("bad", "", 5, "minutes")])

    await xep_0060.publish(client, service, node, [
        recipe("pancakes", "Pancakes", 20, "minutes", "flour", "milk", "eggs"),
        recipe("stew", "Beef stew", 3, "hours", "beef", "carrots"),
    ])
    # first request: unknown node, answered by the server, analysed in the background
    first = await xep_0060.get_items(client, service, node)
    assert not first.cached and len(first.items) == 2
    await cache.wait_background()

    pubsub_node = await backend.storage.pubsub.get_pubsub_node("cook", service, node)
    assert pubsub_node.analyser == "recipes" and pubsub_node.type_ == "recipe"
    assert pubsub_node.sync_state is SyncState.COMPLETED
    items, __ = await backend.storage.pubsub.get_items(pubsub_node.id, details=True)
    parsed = {item.name: item.parsed for item in items}
    assert parsed["pancakes"] == {"title": "Pancakes", "minutes": 20,
                                  "ingredients": ["flour", "milk", "eggs"]}
    assert parsed["stew"]["minutes"] == 180
    assert "bad" not in parsed

    second = await xep_0060.get_items(client, service, node)
    assert second.cached
    assert [i.toXml() for i in second.items] == [i.toXml() for i in first.items]
