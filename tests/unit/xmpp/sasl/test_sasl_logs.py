"""No secret of the exchange ever reaches a log line, even at debug level.

Redaction of registered secrets is switched off here: the scan must prove the code
never logs them, not that the logger hides them.
"""

import base64

import pytest
from twisted.internet import defer
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish

from libervia.backend.xmpp.sasl import initializer as initializer_module
from libervia.backend.xmpp.sasl import scram as scram_module
from libervia.backend.xmpp.sasl.channel_binding import StaticChannelBinding
from libervia.backend.xmpp.sasl.scram_keys import ScramKeyCache
from tests.unit.xmpp.sasl.sasl_support import (
    ScriptedServer,
    make_initializer,
    make_stream,
    result_of,
    set_features,
)

PASSWORD = "Tr0ub4dor&3-horse"


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """Record what the SASL code registers as secret instead of registering it."""
    recorded = []
    def record(secret, owner=None):
        recorded.append(secret)

    monkeypatch.setattr(scram_module, "register_secret", record)
    monkeypatch.setattr(initializer_module, "register_secret", record)
    return recorded


def test_password_is_registered_for_redaction(registered):
    outcome, _ = _run(ScramKeyCache())
    assert outcome is xmlstream.Reset
    assert PASSWORD in registered


def _secrets_of(server: ScriptedServer, cache: ScramKeyCache) -> list[str]:
    """Password, client-final (with the proof), proof alone and the derived keys."""
    secrets = [PASSWORD]
    for element in server.sent:
        if isinstance(element, domish.Element) and element.name == "response":
            client_final = base64.b64decode(str(element)).decode()
            secrets.append(client_final)
            secrets.append(client_final.rsplit("p=", 1)[1])
    for entry in cache.export():
        secrets += [str(entry["client_key"]), str(entry["server_key"])]
    return secrets


def _run(cache, password=PASSWORD, server_password=PASSWORD, **server_kwargs):
    xs = make_stream(password)
    set_features(xs, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"], ["tls-unique"])
    server = ScriptedServer(
        xs, password=server_password, channel_binding=("tls-unique", b"cb"), **server_kwargs
    )
    binding = StaticChannelBinding({"tls-unique": b"cb"}, "TLSv1.2")
    initializer = make_initializer(xs, binding=binding, key_cache=cache)
    return result_of(defer.maybeDeferred(initializer.initialize)), server


def test_debug_logs_of_a_successful_exchange_hold_no_secret(debug_logs):
    cache = ScramKeyCache()
    outcome, server = _run(cache)
    assert outcome is xmlstream.Reset
    lines = debug_logs()
    assert any("SCRAM-SHA-256-PLUS" in line for line in lines)
    secrets = _secrets_of(server, cache)
    assert len(secrets) == 5
    for secret in secrets:
        assert not [line for line in lines if secret in line], "secret leaked in the logs"


def test_debug_logs_of_failed_exchanges_hold_no_secret(debug_logs):
    cache = ScramKeyCache()
    wrong, server = _run(cache, server_password="another one")
    forged, forged_server = _run(cache, server_key=b"\0" * 32)
    assert wrong.condition == "not-authorized"
    assert forged.__class__.__name__ == "ServerSignatureMismatch"
    lines = debug_logs()
    assert any("authentication failed" in line for line in lines)
    for secret in _secrets_of(server, cache) + _secrets_of(forged_server, cache):
        assert not [line for line in lines if secret in line], "secret leaked in the logs"


def test_the_log_says_channel_binding_none_as_li_does_not_the_gs2_flag(debug_logs):
    """SCRAM without -PLUS over TLS sends the GS2 flag "y"; the log line, like
    ``li profile info``, says which binding was used: none."""
    xs = make_stream(PASSWORD)
    set_features(xs, ["SCRAM-SHA-256"])
    server = ScriptedServer(xs, password=PASSWORD)
    binding = StaticChannelBinding({"tls-unique": b"cb"}, "TLSv1.2")
    initializer = make_initializer(xs, binding=binding)
    outcome = result_of(defer.maybeDeferred(initializer.initialize))
    assert outcome is xmlstream.Reset, outcome
    assert server.sent
    assert initializer.result.gs2_flag == "y"
    assert [line for line in debug_logs() if line.startswith("authenticated with")] == [
        "authenticated with SCRAM-SHA-256 (channel binding: none, TLSv1.2, downgrade "
        "protection: not offered)"]
