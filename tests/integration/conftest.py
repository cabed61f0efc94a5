"""Fixtures of the integration tests (real servers, installed distributions)."""

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads

# private Prosody and ejabberd instances (pytest_plugins is only allowed at the root)
from tests.servers.fixtures import (  # noqa: F401
    ejabberd_server,
    prosody_server,
    xmpp_server,
    xmpp_server_factory,
    xmpp_server_pool,
)

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture(scope="session")
def test_plugin_site(tmp_path_factory):
    """Install the test plugin distribution into a folder of its own.

    Returns the folder; put it on ``sys.path`` (or ``PYTHONPATH``) to make the plugin
    visible to ``importlib.metadata``, as any installed distribution would be.
    """
    target = tmp_path_factory.mktemp("plugin-site")
    build = tmp_path_factory.mktemp("plugin-build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target),
         str(DATA / "plugin_dist")],
        check=True, cwd=build, capture_output=True,
    )
    assert list(target.glob("libervia_test_plugin-0.3.1.dist-info"))
    return target


@pytest.fixture
def accounts(xmpp_server):  # noqa: F811 (the fixture imported above)
    """Two new accounts (the profile's and the contact's): rosters start empty."""
    tag = secrets.token_hex(3)
    return (xmpp_server.register(f"owner{tag}", "owner password"),
            xmpp_server.register(f"contact{tag}", "contact password"))


@pytest.fixture
def contact(xmpp_server, accounts):  # noqa: F811 (the fixture imported above)
    """The contact: an independent client (slixmpp) logged in as the second account."""
    pytest.importorskip("slixmpp")
    from tests.contact import Contact

    contact = Contact(xmpp_server, accounts[1])
    pytest_twisted.blockon(threads.deferToThread(contact.start))
    yield contact
    pytest_twisted.blockon(threads.deferToThread(contact.close))
