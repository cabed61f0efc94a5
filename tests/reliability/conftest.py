"""Fixtures of the reliability tests: the private XMPP servers, as in the integration tests."""

from tests.servers.fixtures import (  # noqa: F401
    ejabberd_server,
    prosody_server,
    xmpp_server,
    xmpp_server_factory,
    xmpp_server_pool,
)
