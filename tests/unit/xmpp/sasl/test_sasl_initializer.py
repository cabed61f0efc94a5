"""The Twisted SASL initializer, driven through a fake XML stream (no network)."""

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.ssl import TLSVersion
from twisted.internet.testing import StringTransport
from twisted.words.protocols.jabber import client, jid, sasl, xmlstream
from twisted.words.xish import domish

from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.channel_binding import StaticChannelBinding, TLSChannelBinding
from libervia.backend.xmpp.sasl.initializer import (
    NS_SASL,
    SASLAuthenticator,
    SASLInitializer,
    SASLResult,
    advertised_channel_bindings,
    client_factory,
    install,
)
from libervia.backend.xmpp.sasl.mechanisms import SASLPolicy
from libervia.backend.xmpp.sasl.scram import ServerAdvertisement
from libervia.backend.xmpp.sasl.scram_keys import HASHES, ScramKeyCache
from tests.unit.xmpp.sasl.sasl_support import (
    PASSWORD,
    ScriptedServer,
    make_initializer,
    make_stream,
    result_of,
    run_now,
    set_features,
    twisted_tls_pair,
)

CB_DATA = b"exporter-data-of-this-connection"
TLS13_BINDING = StaticChannelBinding({"tls-exporter": CB_DATA}, "TLSv1.3")


def sent_names(server):
    return [e.name for e in server.sent if isinstance(e, domish.Element)]


def authenticate(mechanisms, cb_types=None, binding=None, tls_version="TLSv1.3",
                 password=PASSWORD, server_password=PASSWORD, initializer_kwargs=None,
                 **server_kwargs):
    xs = make_stream(password)
    xs.transport = StringTransport()
    set_features(xs, mechanisms, cb_types)
    server = ScriptedServer(xs, password=server_password, **server_kwargs)
    initializer = make_initializer(
        xs, binding=binding, tls_version=tls_version, **(initializer_kwargs or {})
    )
    d = defer.maybeDeferred(initializer.initialize)
    return result_of(d), initializer, server, xs


def start_silent():
    """Start SCRAM-SHA-256 with a server that only records: the test pushes replies."""
    xs = make_stream()
    set_features(xs, ["SCRAM-SHA-256"])
    server = ScriptedServer(xs)
    server.receive = server.sent.append
    xs.send = server.receive
    return xs, server, defer.maybeDeferred(make_initializer(xs).initialize)


def test_scram_success_resets_the_stream_and_records_the_result():
    results = []
    outcome, initializer, server, xs = authenticate(
        ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"],
        binding=TLS13_BINDING,
        initializer_kwargs={"on_authenticated": results.append},
    )
    assert outcome is xmlstream.Reset
    assert sent_names(server) == ["auth", "response"]
    assert server.mechanism == "SCRAM-SHA-256"
    expected = SASLResult("SCRAM-SHA-256", None, "y", "TLSv1.3", False, False)
    assert initializer.result == expected
    assert xs.sasl_result == expected and xs.authenticator.sasl_result == expected
    assert results == [expected]
    assert expected.scram and expected.as_dict()["scram"] is True
    # a new stream header was sent after the reset
    assert any(isinstance(e, str) and "<stream:stream" in e for e in server.sent)


def test_scram_plus_with_channel_binding():
    outcome, initializer, server, _ = authenticate(
        ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"],
        ["tls-server-end-point"],
        binding=StaticChannelBinding({"tls-server-end-point": CB_DATA}, "TLSv1.2"),
        channel_binding=("tls-server-end-point", CB_DATA),
    )
    assert outcome is xmlstream.Reset
    assert server.mechanism == "SCRAM-SHA-512-PLUS"
    assert initializer.result.channel_binding == "tls-server-end-point"
    assert initializer.result.gs2_flag == "p"
    assert initializer.result.tls_version == "TLSv1.2"


def test_channel_binding_of_another_connection_fails():
    """A MITM terminating TLS has other binding data than the real server sees."""
    outcome, _, server, _ = authenticate(
        ["SCRAM-SHA-256-PLUS"],
        binding=StaticChannelBinding({"tls-unique": b"mitm side"}, "TLSv1.2"),
        channel_binding=("tls-unique", b"server side"),
    )
    assert isinstance(outcome, errors.AuthenticationFailed)
    assert outcome.condition == "not-authorized"


def test_refused_guessed_channel_binding_is_named_in_the_error():
    """ejabberd 23.01 on TLS 1.3: -PLUS offered, no XEP-0440, tls-unique only."""
    xs = make_stream()
    set_features(xs, ["SCRAM-SHA-256-PLUS"])
    server = ScriptedServer(xs)
    server.receive = server.sent.append
    xs.send = server.receive
    binding = StaticChannelBinding({"tls-exporter": b"e" * 32}, "TLSv1.3")
    d = defer.maybeDeferred(make_initializer(xs, binding=binding).initialize)
    # what ejabberd 23.01 answers to the client-first of a tls-exporter binding
    server.push_failure("not-authorized", text="Invalid channel binding")
    outcome = result_of(d)
    assert isinstance(outcome, errors.InvalidCredentials)
    assert "channel binding tls-exporter of SCRAM-SHA-256-PLUS" in str(outcome)
    assert "allow SCRAM without -PLUS" in str(outcome)
    # with XEP-0440 the server chose the type: a refusal is about the credentials
    outcome, _, server, _ = authenticate(
        ["SCRAM-SHA-256-PLUS"], ["tls-server-end-point"],
        binding=StaticChannelBinding({"tls-server-end-point": CB_DATA}, "TLSv1.3"),
        channel_binding=("tls-server-end-point", CB_DATA), server_password="other",
    )
    assert isinstance(outcome, errors.InvalidCredentials)
    assert "channel binding" not in str(outcome)


def _add_ssdp(mechanisms, cb_types, scram_hash="SHA-256"):
    advertisement = ServerAdvertisement(tuple(mechanisms), cb_types and tuple(cb_types))
    value = base64.b64encode(advertisement.ssdp_hash(HASHES[scram_hash])).decode()
    return lambda server_first: f"{server_first},h={value}"


def test_downgrade_protection_is_verified_and_recorded():
    mechanisms = ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
    cb_types = ["tls-server-end-point", "tls-exporter"]
    outcome, initializer, _, _ = authenticate(
        mechanisms,
        cb_types,
        binding=StaticChannelBinding({"tls-server-end-point": CB_DATA}, "TLSv1.3"),
        channel_binding=("tls-server-end-point", CB_DATA),
        tamper_first=_add_ssdp(mechanisms, cb_types),
    )
    assert outcome is xmlstream.Reset
    assert initializer.result.downgrade_protection is True


def test_stripped_mechanism_list_is_detected_by_downgrade_protection():
    # the server advertised -PLUS too, an attacker removed it from what we received
    real = ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
    outcome, _, server, _ = authenticate(
        ["SCRAM-SHA-256"], tamper_first=_add_ssdp(real, None), binding=None,
        tls_version=None,
    )
    assert isinstance(outcome, errors.DowngradeDetected)
    assert sent_names(server) == ["auth", "abort"]


def test_no_mutual_channel_binding_without_ssdp_aborts():
    outcome, initializer, server, _ = authenticate(
        ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], ["tls-made-up"], binding=TLS13_BINDING
    )
    assert initializer.choice.gs2_flag == "n"
    assert isinstance(outcome, errors.DowngradeDetected)
    assert sent_names(server) == ["auth", "abort"]


def test_no_mutual_channel_binding_with_valid_ssdp_succeeds():
    mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
    outcome, initializer, _, _ = authenticate(
        mechanisms, ["tls-made-up"], binding=TLS13_BINDING,
        tamper_first=_add_ssdp(mechanisms, ["tls-made-up"]),
    )
    assert outcome is xmlstream.Reset
    assert initializer.result.downgrade_protection and initializer.result.gs2_flag == "n"


def test_wrong_signature_in_success_data_fails_and_closes_the_connection():
    outcome, _, _, xs = authenticate(["SCRAM-SHA-256"], server_key=b"\0" * 32)
    assert isinstance(outcome, errors.ServerSignatureMismatch)
    assert outcome.retry is False
    assert xs.transport.disconnecting


def test_success_without_signature_is_refused():
    outcome, _, _, xs = authenticate(["SCRAM-SHA-256"], tamper_final=lambda final: "")
    assert isinstance(outcome, errors.ServerSignatureMissing)
    assert xs.transport.disconnecting


def test_signature_sent_in_a_final_challenge_is_accepted():
    outcome, _, server, _ = authenticate(["SCRAM-SHA-1"], final_in_challenge=True)
    assert outcome is xmlstream.Reset
    assert sent_names(server) == ["auth", "response", "response"]


def test_wrong_password_maps_to_invalid_credentials():
    outcome, _, server, _ = authenticate(["SCRAM-SHA-256"], password="not-the-pencil-42")
    assert isinstance(outcome, errors.InvalidCredentials)
    assert outcome.retry is False
    assert outcome.condition == "not-authorized"
    assert "wrong password" in str(outcome)
    assert "not-the-pencil-42" not in str(outcome)


@pytest.mark.parametrize(
    "condition,error,retry",
    [
        ("not-authorized", errors.InvalidCredentials, False),
        ("account-disabled", errors.AccountDisabled, False),
        ("credentials-expired", errors.CredentialsExpired, False),
        ("temporary-auth-failure", errors.TemporaryAuthFailure, True),
        ("encryption-required", errors.EncryptionRequired, False),
        ("mechanism-too-weak", errors.MechanismRejected, False),
        ("malformed-request", errors.SASLProtocolError, False),
        ("aborted", errors.AuthenticationAborted, False),
        ("made-up-condition", errors.AuthenticationFailed, False),
    ],
)
def test_failure_conditions_map_to_errors(condition, error, retry):
    xs, server, d = start_silent()
    server.push_failure(condition, text="see \u00e9 admin" + "!" * 300)
    outcome = result_of(d)
    assert type(outcome) is error
    assert outcome.condition == condition
    assert outcome.retry is retry
    # non-ASCII replaced, length bounded
    assert outcome.text.startswith("see ? admin!!!") and outcome.text.endswith("...")
    assert len(outcome.text) < 210
    assert "see ? admin" in str(outcome)


def test_plain_is_refused_without_tls():
    outcome, _, server, _ = authenticate(["PLAIN"], binding=None, tls_version=None)
    assert isinstance(outcome, errors.NoAcceptableMechanism)
    assert server.sent == []


def test_plain_is_refused_after_scram_was_seen():
    outcome, _, server, _ = authenticate(
        ["PLAIN"], initializer_kwargs={"policy": SASLPolicy(scram_seen=True)}
    )
    assert isinstance(outcome, errors.NoAcceptableMechanism)
    assert server.sent == []


def test_plain_over_tls_for_a_new_account():
    outcome, initializer, server, _ = authenticate(["PLAIN"])
    assert outcome is xmlstream.Reset
    assert base64.b64decode(str(server.sent[0])) == b"\0user\0" + PASSWORD.encode()
    assert initializer.result.mechanism == "PLAIN" and not initializer.result.scram


def test_garbled_challenge_aborts():
    xs, server, d = start_silent()
    xs.dataReceived(f"<challenge xmlns='{NS_SASL}'>not base64!</challenge>".encode())
    assert isinstance(result_of(d), errors.MalformedServerMessage)
    assert sent_names(server) == ["auth", "abort"]
    # late server messages are ignored
    xs.dataReceived(f"<success xmlns='{NS_SASL}'/>".encode())


def test_key_cache_spares_pbkdf2_on_reconnection_and_drops_stale_keys():
    cache = ScramKeyCache()
    first, initializer, _, _ = authenticate(
        ["SCRAM-SHA-256"], initializer_kwargs={"key_cache": cache}
    )
    assert first is xmlstream.Reset and not initializer.result.cached_keys
    second, initializer, _, _ = authenticate(
        ["SCRAM-SHA-256"], initializer_kwargs={"key_cache": cache}
    )
    assert second is xmlstream.Reset
    assert initializer.result.cached_keys and initializer._scram.kdf_runs == 0
    assert cache.hits == 1
    # the password changed (the salt did not) and the profile kept its cache: the
    # stale keys fail once, then they are gone and the next attempt derives new ones
    third, initializer, _, _ = authenticate(
        ["SCRAM-SHA-256"], initializer_kwargs={"key_cache": cache},
        password="new one", server_password="new one",
    )
    assert isinstance(third, errors.InvalidCredentials)
    assert len(cache) == 0
    fourth, initializer, _, _ = authenticate(
        ["SCRAM-SHA-256"], initializer_kwargs={"key_cache": cache},
        password="new one", server_password="new one",
    )
    assert fourth is xmlstream.Reset and initializer._scram.kdf_runs == 1


def test_settings_can_come_from_the_authenticator():
    xs = make_stream()
    xs.authenticator.sasl_policy = SASLPolicy(scram_seen=True)
    set_features(xs, ["PLAIN"])
    ScriptedServer(xs)
    d = defer.maybeDeferred(make_initializer(xs).initialize)
    assert isinstance(result_of(d), errors.NoAcceptableMechanism)


def test_install_replaces_twisted_sasl_initializer():
    authenticator = client.XMPPAuthenticator(jid.JID("user@example.org"), PASSWORD)
    xs = xmlstream.XmlStream(authenticator)
    new = install(xs, policy=SASLPolicy())
    kinds = [type(init) for init in xs.initializers]
    assert SASLInitializer in kinds
    assert sasl.SASLInitiatingInitializer not in kinds
    assert kinds.index(SASLInitializer) == kinds.index(xmlstream.TLSInitiatingInitializer) + 1
    assert new.required is True


def test_sasl_authenticator_uses_the_new_initializer():
    cache = ScramKeyCache()
    authenticator = SASLAuthenticator(
        jid.JID("user@example.org"), PASSWORD, policy=SASLPolicy(), key_cache=cache
    )
    xs = xmlstream.XmlStream(authenticator)
    initializers = [i for i in xs.initializers if isinstance(i, SASLInitializer)]
    assert len(initializers) == 1
    assert initializers[0].key_cache is cache


def test_client_factory_plugs_into_wokkel_stream_manager():
    from wokkel.subprotocols import StreamManager

    results = []
    factory = client_factory(
        jid.JID("user@example.org"), PASSWORD, on_authenticated=results.append
    )
    manager = StreamManager(factory)
    xs = manager.factory.buildProtocol(None)
    initializers = [i for i in xs.initializers if isinstance(i, SASLInitializer)]
    assert len(initializers) == 1
    assert xs.authenticator.sasl_on_authenticated == results.append


def test_channel_binding_feature_is_read_from_both_places():
    xs = make_stream()
    set_features(xs, ["SCRAM-SHA-1"], ["tls-exporter", "tls-server-end-point"])
    assert advertised_channel_bindings(xs.features) == ("tls-exporter", "tls-server-end-point")
    set_features(xs, ["SCRAM-SHA-1"])
    assert advertised_channel_bindings(xs.features) is None
    mechanisms = xs.features[(NS_SASL, "mechanisms")]
    inner = mechanisms.addElement(("urn:xmpp:sasl-cb:0", "sasl-channel-binding"))
    inner.addElement("channel-binding")["type"] = "tls-unique"
    assert advertised_channel_bindings(xs.features) == ("tls-unique",)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    challenge=st.one_of(
        st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
        st.text(alphabet="ABCxyz019+/= \n!&<", max_size=40).map(
            lambda t: t.replace("&", "&amp;").replace("<", "&lt;")
        ),
    )
)
def test_garbled_challenges_end_in_a_clean_failure(challenge):
    xs = make_stream()
    set_features(xs, ["SCRAM-SHA-256"])
    sent = []
    xs.send = sent.append
    d = defer.maybeDeferred(make_initializer(xs).initialize)
    xs.dataReceived(f"<challenge xmlns='{NS_SASL}'>{challenge}</challenge>".encode())
    outcome = result_of(d)
    assert isinstance(outcome, errors.SASLError)
    assert sent[-1].name == "abort"


def test_whitespace_around_advertised_names_is_ignored():
    outcome, _, server, _ = authenticate(["\n  SCRAM-SHA-1  \n"])
    assert outcome is xmlstream.Reset
    assert server.mechanism == "SCRAM-SHA-1"


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest.mark.parametrize(
    "max_version,tls_version,cb_type",
    [
        (None, "TLSv1.3", "tls-server-end-point"),
        (TLSVersion.TLSv1_2, "TLSv1.2", "tls-unique"),
    ],
)
def test_binding_to_a_real_twisted_tls_connection(
    rsa_certificate, max_version, tls_version, cb_type
):
    """Default channel-binding source: the TLS transport under the XML stream.

    The server side reads the same type from its own end of the connection, so the
    exchange only succeeds if both ends computed the same data.
    """
    client_tls, server_tls = twisted_tls_pair(rsa_certificate, max_version)
    xs = make_stream()
    xs.transport = client_tls
    set_features(xs, ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], [cb_type])
    server_data = TLSChannelBinding(server_tls.getHandle(), is_client=False).get(cb_type)
    ScriptedServer(xs, channel_binding=(cb_type, server_data))
    initializer = SASLInitializer(xs, run_blocking=run_now)
    outcome = result_of(defer.maybeDeferred(initializer.initialize))
    assert outcome is xmlstream.Reset
    assert initializer.result.channel_binding == cb_type
    assert initializer.result.tls_version == tls_version
