"""Profiles of a real backend connecting to the private Prosody and ejabberd.

Each test builds a :class:`~libervia.backend.app.main.Backend` on the real reactor with a
temporary local folder, creates profiles through ``host.profiles`` pointing at a test
server (address and port given, TLS verified against the session's CA for the JID's
domain, ``localhost``) and connects them through ``host.clients``.

Every test runs with the backend's log level at ``debug``; the events of the whole run
are scanned for the passwords, for what the SASL exchanges sent (PLAIN message, SCRAM
proofs) and for the SCRAM keys derived: none may appear. Reconnection delays are lowered
to a fraction of a second, and connection attempts counted, so that "no new attempt"
is checked over a period where many retries would have happened.
"""

from __future__ import annotations

import base64
import itertools
import tempfile
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, ssl, task, threads
from twisted.internet.ssl import TLSVersion
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from libervia.backend.app.main import Backend
from libervia.backend.core import log
from libervia.backend.core.config import Config
from libervia.backend.xmpp.client import (
    CertificateError,
    ClientFactory,
    ConnectionFailed,
    ConnectionState,
)
from libervia.backend.xmpp.profiles import ConnectionOptions, ProfileManager
from libervia.backend.xmpp.sasl import errors as sasl_errors
from libervia.backend.xmpp.sasl.initializer import SASLInitializer
from libervia.backend.xmpp.sasl.scram import ScramClient
from libervia.backend.xmpp.sasl.scram_keys import ScramKeyCache
from tests.servers import free_port

pytestmark = pytest.mark.integration

#: longest wait for anything a test waits for (a login takes well under a second)
TIMEOUT = 20
#: how long a test watches for a reconnection that must not happen; the back-off is
#: lowered to RETRY_DELAY, so a retry would come many times within it
QUIET_PERIOD = 1.5
RETRY_DELAY = 0.05

TLS_VERSIONS = {"tls12": TLSVersion.TLSv1_2, "tls13": None}
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"

_names = itertools.count()


# --- what must never be logged -------------------------------------------------------


class SecretWatch:
    """Log events of the test, and the secrets that must not appear in them."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.secrets: set[str] = set()
        self.proofs: list[str] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def add_payload(self, data: bytes | None) -> None:
        """Record what a SASL message carried (as sent, and base64 on the wire)."""
        if not data:
            return
        self.secrets.add(base64.b64encode(data).decode())
        text = data.decode("utf-8", "replace")
        if not text.startswith("c="):
            return  # only SCRAM's client-final carries a proof
        for part in text.split(","):
            if part.startswith("p="):
                self.proofs.append(part[2:])
                self.secrets.add(part[2:])

    def texts(self):
        for event in self.events:
            yield repr(event)
            try:
                yield formatEvent(event)
            except Exception:  # noqa: BLE001 - an unformattable event is still scanned
                pass
            failure = event.get("log_failure")
            if failure is not None:
                yield failure.getTraceback()

    def leaks(self) -> list[str]:
        found = []
        for text in self.texts():
            for secret in self.secrets:
                if len(secret) >= 6 and secret in text:
                    found.append(f"{secret[:3]}... in {text[:200]!r}")
        return found


@pytest.fixture(autouse=True)
def secret_watch(monkeypatch, request):
    """Debug logs for the test; fail it if a password or SASL proof was logged."""
    watch = SecretWatch()
    original_auth = SASLInitializer.sendAuth
    original_response = SASLInitializer.sendResponse

    def send_auth(self, data=None):
        watch.add_payload(data)
        return original_auth(self, data)

    def send_response(self, data=b""):
        watch.add_payload(data)
        return original_response(self, data)

    original_create = ProfileManager.create
    original_put = ScramKeyCache.put

    def create(self, name, jid, password, options=None):
        watch.secrets.add(password)
        return original_create(self, name, jid, password, options)

    def put(self, entry, keys):
        watch.secrets.update(base64.b64encode(key).decode()
                             for key in (keys.client_key, keys.server_key))
        return original_put(self, entry, keys)

    monkeypatch.setattr(SASLInitializer, "sendAuth", send_auth)
    monkeypatch.setattr(SASLInitializer, "sendResponse", send_response)
    monkeypatch.setattr(ProfileManager, "create", create)
    monkeypatch.setattr(ScramKeyCache, "put", put)
    log.set_level("debug")
    globalLogPublisher.addObserver(watch)
    try:
        yield watch
    finally:
        globalLogPublisher.removeObserver(watch)
    assert watch.events, "no log event captured: the scan below would prove nothing"
    if watch.proofs:
        assert any(e.get("log_level") is LogLevel.debug for e in watch.events)
    leaks = watch.leaks()
    assert not leaks, "secrets in the logs:\n" + "\n".join(leaks)


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch):
    """Reconnection delays of a fraction of a second, and a count of attempts."""
    attempts: list[object] = []
    original = ClientFactory.startedConnecting

    def started_connecting(self, connector):
        attempts.append(self.client.profile.name)
        return original(self, connector)

    monkeypatch.setattr(ClientFactory, "initialDelay", RETRY_DELAY)
    monkeypatch.setattr(ClientFactory, "maxDelay", 0.5)
    monkeypatch.setattr(ClientFactory, "startedConnecting", started_connecting)
    return attempts


# --- a backend and its profiles ------------------------------------------------------


@pytest.fixture
def make_backend(tmp_path):
    """``make_backend()``: a started Backend on the real reactor (same folder each time).

    Every backend made is stopped at the end of the test.
    """
    started: list[Backend] = []
    with tempfile.TemporaryDirectory(prefix="li-") as sockets:
        config = Config.from_dict({
            "DEFAULT": {"local_dir": tmp_path / "local"},
            "bridge": {"socket": Path(sockets) / "bridge.sock"},
        })

        def make() -> defer.Deferred:
            backend = Backend(config, reactor=reactor, plugin_entry_points=[])
            started.append(backend)
            return backend.startService().addCallback(lambda __: backend)

        try:
            yield make
        finally:
            for backend in reversed(started):
                if backend.running:
                    pytest_twisted.blockon(backend.stopService())


@pytest.fixture
def backend(make_backend):
    return pytest_twisted.blockon(make_backend())


def record_states(backend) -> list[tuple[str, str, str | None]]:
    """``connection_state`` signals the backend emits: (profile, state, error)."""
    states = []
    emit = backend.bridge.emit_signal

    def emit_signal(name, **data):
        if name == "connection_state":
            states.append((data["profile"], data["state"], data["error"]))
        return emit(name, **data)

    backend.bridge.emit_signal = emit_signal
    return states


async def make_profile(backend, info, user=None, *, direct_tls=False, mechanisms=(),
                       password=None, port=None, autoconnect=False, ca_file="test CA"
                       ) -> str:
    """Create a profile for ``user`` (the first one by default) of server ``info``."""
    if ca_file == "test CA":
        ca_file = str(info.ca_file)
    user = user or info.user(0)
    name = f"p{next(_names)}"
    if port is None:
        port = info.direct_tls_port if direct_tls else info.c2s_port
    options = ConnectionOptions(
        host=info.address, port=port, direct_tls=direct_tls, ca_file=ca_file,
        mechanisms=tuple(mechanisms), autoconnect=autoconnect,
    )
    await backend.profiles.create(name, user.jid, password or user.password, options)
    return name


def connect(backend, name: str) -> defer.Deferred:
    return defer.ensureDeferred(backend.clients.connect(name)).addTimeout(TIMEOUT, reactor)


async def connect_error(backend, name: str) -> BaseException:
    """Connect ``name``, which must fail; return the error."""
    try:
        await connect(backend, name)
    except defer.TimeoutError:
        raise
    except Exception as e:  # noqa: BLE001 - the test looks at what it is
        return e
    raise AssertionError(f"profile {name} connected, it should have failed")


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_for(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.05)


def set_tls(backend, tls: str) -> None:
    version = TLS_VERSIONS[tls]
    if version is not None:
        backend.clients.client_options["tls_max_version"] = version


def offered(info, tls: str) -> frozenset[str]:
    return info.mechanisms_tls12 if tls == "tls12" else info.mechanisms


async def assert_no_new_attempt(attempts: list, *names: str) -> None:
    """Watch for QUIET_PERIOD: no profile of ``names`` makes a connection attempt."""
    before = len(attempts)
    await sleep(QUIET_PERIOD)
    again = [name for name in attempts[before:] if name in names]
    assert not again, f"new connection attempts: {again}"


# --- logging in ----------------------------------------------------------------------


def expected_binding(mechanism: str, tls: str) -> str | None:
    if not mechanism.endswith("-PLUS"):
        return None
    return "tls-unique" if tls == "tls12" else "tls-exporter"


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("tls", list(TLS_VERSIONS))
@pytest_twisted.ensureDeferred
async def test_every_offered_mechanism_logs_in(backend, xmpp_server, tls, direct_tls,
                                               fast_retry):
    """Each mechanism the server offers, alone in the profile's list, logs in.

    The exception, by design: ejabberd 23.01 offers -PLUS on TLS 1.3 but only knows
    tls-unique, which TLS 1.3 does not define, and it lists no channel-binding type
    (XEP-0440); the client's only choice, tls-exporter, is refused, and the error says
    so, without a retry.
    """
    set_tls(backend, tls)
    version = "TLSv1.2" if tls == "tls12" else "TLSv1.3"
    mechanisms = offered(xmpp_server, tls)
    assert {"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"} <= mechanisms
    refused_plus = xmpp_server.kind == "ejabberd" and tls == "tls13"
    refused = []
    for mechanism in sorted(mechanisms):
        name = await make_profile(backend, xmpp_server, mechanisms=[mechanism],
                                  direct_tls=direct_tls)
        if refused_plus and mechanism.endswith("-PLUS"):
            error = await connect_error(backend, name)
            assert isinstance(error, sasl_errors.InvalidCredentials), error
            assert "channel binding tls-exporter" in str(error)
            assert "allow SCRAM without -PLUS" in str(error)
            assert backend.clients.info(name)["state"] == "failed"
            refused.append(name)
            continue
        client = await connect(backend, name)
        info = client.info()
        assert info["state"] == "connected"
        assert info["bound_jid"].startswith(xmpp_server.user(0).jid + "/")
        assert info["sasl_mechanism"] == mechanism
        assert info["channel_binding"] == expected_binding(mechanism, tls)
        assert info["tls_version"] == version
        # neither server implements XEP-0474
        assert info["downgrade_protection"] is False
        if mechanism.startswith("SCRAM-"):
            assert client.sasl.gs2_flag == ("p" if mechanism.endswith("-PLUS") else "n")
        bridge_info = await backend.bridge.call("profile_info", {"name": name})
        assert bridge_info["connection"] == info
        assert bridge_info["options"]["mechanisms"] == [mechanism]
        await backend.clients.disconnect(name)
        assert backend.clients.info(name)["state"] == "disconnected"
    assert len(refused) == (3 if refused_plus else 0)
    if refused:
        await assert_no_new_attempt(fast_retry, *refused)


@pytest_twisted.ensureDeferred
async def test_plus_only_profile_fails_cleanly_where_no_plus_is_offered(
    backend, prosody_server, fast_retry
):
    # Prosody 0.12 has tls-unique only, so no -PLUS on TLS 1.3
    assert "SCRAM-SHA-256-PLUS" not in prosody_server.mechanisms
    name = await make_profile(backend, prosody_server, mechanisms=["SCRAM-SHA-256-PLUS"])
    error = await connect_error(backend, name)
    assert isinstance(error, sasl_errors.NoAcceptableMechanism)
    assert "the profile allows SCRAM-SHA-256-PLUS" in str(error)
    await assert_no_new_attempt(fast_retry, name)


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("tls", list(TLS_VERSIONS))
@pytest_twisted.ensureDeferred
async def test_default_choice_logs_in_with_the_strongest_usable_mechanism(
    backend, xmpp_server, tls, direct_tls
):
    set_tls(backend, tls)
    name = await make_profile(backend, xmpp_server, direct_tls=direct_tls)
    info = await backend.bridge.call("profile_connect", {"name": name}).addTimeout(
        TIMEOUT, reactor)
    client = backend.clients.get(name)
    assert info == client.info()
    assert info["state"] == "connected"
    strongest = "SCRAM-SHA-512" if xmpp_server.kind == "ejabberd" else "SCRAM-SHA-256"
    if tls == "tls12":
        # tls-unique, the default of TLS 1.2, works with both servers
        assert (info["sasl_mechanism"], info["channel_binding"]) == (
            strongest + "-PLUS", "tls-unique")
        assert info["tls_version"] == "TLSv1.2"
    else:
        # no XEP-0440 on either: SCRAM without binding rather than a tls-exporter guess
        assert (info["sasl_mechanism"], info["channel_binding"]) == (strongest, None)
        assert info["tls_version"] == "TLSv1.3"
        # ejabberd offers -PLUS there (flag n); Prosody does not (flag y)
        assert client.sasl.gs2_flag == ("n" if xmpp_server.kind == "ejabberd" else "y")
    assert info["downgrade_protection"] is False
    await backend.bridge.call("profile_disconnect", {"name": name})
    assert (await backend.bridge.call("profile_info", {"name": name}))["connection"][
        "state"] == "disconnected"


# --- failures that must stop at once -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wrong_password_fails_fast_without_reconnecting(
    backend, xmpp_server, fast_retry
):
    name = await make_profile(backend, xmpp_server, xmpp_server.user(1),
                              password="not the password")
    states = record_states(backend)
    started = time.monotonic()
    error = await connect_error(backend, name)
    assert time.monotonic() - started < 5
    assert isinstance(error, sasl_errors.InvalidCredentials)
    assert str(error).startswith("wrong password")
    assert fast_retry.count(name) == 1
    assert [state for __, state, __ in states] == ["connecting", "failed"]
    assert states[-1][2] == str(error)
    await assert_no_new_attempt(fast_retry, name)
    assert len(states) == 2
    info = await backend.bridge.call("profile_info", {"name": name})
    assert info["connection"]["state"] == "failed"
    assert info["connection"]["error"].startswith("wrong password")


@pytest_twisted.ensureDeferred
async def test_unreachable_port_fails_on_the_first_attempt(backend, prosody_server,
                                                            fast_retry):
    port = free_port()
    name = await make_profile(backend, prosody_server, port=port)
    started = time.monotonic()
    error = await connect_error(backend, name)
    assert time.monotonic() - started < 5
    assert isinstance(error, ConnectionFailed)
    assert f"to 127.0.0.1:{port}: Connection was refused" in str(error)
    assert "check the profile's host and port" in str(error)
    assert fast_retry.count(name) == 1
    await assert_no_new_attempt(fast_retry, name)


class WrongNameServer(protocol.Protocol):
    """Serves the certificate of another host name, directly or after STARTTLS."""

    def __init__(self, options, starttls: bool) -> None:
        self.options = options
        self.starttls = starttls
        self.buffer = b""

    def connectionMade(self) -> None:  # noqa: N802
        if not self.starttls:
            self.transport.startTLS(self.options)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if not self.starttls:
            return
        self.buffer += data
        if b"<stream:stream" in self.buffer and b"<starttls" not in self.buffer:
            self.transport.write(
                b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                b"xmlns:stream='http://etherx.jabber.org/streams' from='localhost' "
                b"id='x' version='1.0'><stream:features>"
                b"<starttls xmlns='" + NS_TLS.encode() + b"'><required/></starttls>"
                b"</stream:features>"
            )
        elif b"<starttls" in self.buffer:
            self.buffer = b""
            self.starttls = False
            self.transport.write(b"<proceed xmlns='" + NS_TLS.encode() + b"'/>")
            self.transport.startTLS(self.options)


@pytest.fixture
def wrong_name_listener(prosody_server):
    """``listen(starttls) -> port`` of a server presenting the wrong-name certificate."""
    pem = (prosody_server.wrong_name_cert_file.read_bytes()
           + prosody_server.wrong_name_key_file.read_bytes())
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    ports = []

    def listen(starttls: bool) -> int:
        factory = protocol.Factory.forProtocol(lambda: WrongNameServer(options, starttls))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port

    yield listen
    for port in ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


# Twisted's certificate options still hand pyOpenSSL objects to pyOpenSSL
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest_twisted.ensureDeferred
async def test_certificate_for_another_name_is_refused(
    backend, prosody_server, wrong_name_listener, fast_retry, direct_tls
):
    port = wrong_name_listener(starttls=not direct_tls)
    name = await make_profile(backend, prosody_server, port=port, direct_tls=direct_tls)
    error = await connect_error(backend, name)
    assert isinstance(error, CertificateError), repr(error)
    assert "not valid for localhost" in str(error)
    await assert_no_new_attempt(fast_retry, name)


@pytest_twisted.ensureDeferred
async def test_certificate_of_an_unknown_authority_is_refused(
    backend, prosody_server, fast_retry
):
    name = await make_profile(backend, prosody_server, ca_file=None)
    error = await connect_error(backend, name)
    assert isinstance(error, CertificateError), repr(error)
    assert "certificate verify failed" in str(error)
    assert "set the profile's CA file" in str(error)
    await assert_no_new_attempt(fast_retry, name)


# --- reconnection, key cache, SCRAM pin ----------------------------------------------


#: servers storing hashed passwords: their salt is stable, so cached keys can match
HASHED_PASSWORDS = {
    "prosody": {"authentication": "internal_hashed"},
    "ejabberd": {"password_format": "scram"},
}


@pytest.mark.parametrize("kind", list(HASHED_PASSWORDS))
@pytest_twisted.ensureDeferred
async def test_reconnects_after_a_server_restart_with_cached_keys(
    backend, xmpp_server_factory, fast_retry, monkeypatch, kind
):
    server = xmpp_server_factory(kind, **HASHED_PASSWORDS[kind])
    derivations = []
    derive_keys = ScramClient.derive_keys
    monkeypatch.setattr(ScramClient, "derive_keys",
                        lambda self: (derivations.append(1), derive_keys(self))[1])
    name = await make_profile(backend, server)
    client = await connect(backend, name)
    assert client.sasl.mechanism.startswith("SCRAM-")
    assert client.sasl.cached_keys is False
    assert len(derivations) == 1
    key_cache = client.factory.authenticator.sasl_key_cache
    hits = key_cache.hits
    states = record_states(backend)
    try:
        await threads.deferToThread(server.stop)
        await wait_for(lambda: (name, "reconnecting") in [s[:2] for s in states],
                       "reconnecting")
        # the server is down: attempts go on, with the (lowered) back-off
        await wait_for(lambda: fast_retry.count(name) >= 3, "new attempts")
        await threads.deferToThread(server.start)
        await wait_for(lambda: client.state is ConnectionState.CONNECTED, "reconnected")
    finally:
        if not server.running:
            await threads.deferToThread(server.start)
    assert backend.clients.get(name) is client
    assert states[-1][:2] == (name, "connected")
    assert "failed" not in [state for __, state, __ in states]
    # the back-off is reset by the successful login
    assert client.factory.delay <= RETRY_DELAY
    # no PBKDF2 for the new login: the keys came from the cache
    assert client.sasl.cached_keys is True
    assert key_cache.hits > hits
    assert len(derivations) == 1
    info = await backend.bridge.call("profile_info", {"name": name})
    assert info["connection"]["state"] == "connected"
    await backend.clients.disconnect(name)


@pytest_twisted.ensureDeferred
async def test_cached_keys_survive_a_new_connection_and_scram_pins_out_plain(
    backend, xmpp_server_factory
):
    server = xmpp_server_factory("ejabberd", **HASHED_PASSWORDS["ejabberd"])
    name = await make_profile(backend, server)
    first = await connect(backend, name)
    assert first.sasl.scram and not first.sasl.cached_keys
    await backend.clients.disconnect(name)
    # a new client: the keys come from the encrypted store
    second = await connect(backend, name)
    assert second is not first
    assert second.sasl.cached_keys is True
    assert second.factory.authenticator.sasl_key_cache.hits >= 1
    await backend.clients.disconnect(name)

    # a new password in the profile: the keys of the old one must not log in
    await backend.bridge.call("profile_set_password", {"name": name,
                                                       "password": "a wrong one"})
    error = await connect_error(backend, name)
    assert isinstance(error, sasl_errors.InvalidCredentials)
    await backend.bridge.call("profile_set_password", {"name": name,
                                                       "password": server.user(0).password})

    await backend.profiles.update(name, mechanisms=("PLAIN",))
    error = await connect_error(backend, name)
    assert isinstance(error, sasl_errors.NoAcceptableMechanism)
    assert "used SCRAM before" in str(error)


@pytest_twisted.ensureDeferred
async def test_plain_is_used_by_a_new_account_then_refused_after_scram(
    backend, prosody_server
):
    name = await make_profile(backend, prosody_server, mechanisms=["PLAIN"])
    client = await connect(backend, name)
    assert client.sasl.mechanism == "PLAIN"
    await backend.clients.disconnect(name)
    await backend.profiles.update(name, mechanisms=("SCRAM-SHA-1", "PLAIN"))
    client = await connect(backend, name)
    assert client.sasl.mechanism == "SCRAM-SHA-1"
    await backend.clients.disconnect(name)
    await backend.profiles.update(name, mechanisms=("PLAIN",))
    error = await connect_error(backend, name)
    assert isinstance(error, sasl_errors.NoAcceptableMechanism)


# --- start-up ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_autoconnect_profile_connects_when_the_backend_starts(
    make_backend, xmpp_server, fast_retry
):
    first = await make_backend()
    auto = await make_profile(first, xmpp_server, autoconnect=True)
    manual = await make_profile(first, xmpp_server, xmpp_server.user(1))
    await first.stopService()

    backend = await make_backend()
    # a frontend asking at the same time shares the connection being made
    info = await backend.bridge.call("profile_connect", {"name": auto}).addTimeout(
        TIMEOUT, reactor)
    assert info["state"] == "connected"
    assert backend.clients.is_connected(auto)
    assert fast_retry.count(auto) == 1
    assert not backend.clients.is_connected(manual)
    profiles = {p["name"]: p for p in await backend.bridge.call("profile_list", {})}
    assert profiles[auto]["state"] == "connected" and profiles[auto]["autoconnect"]
    assert profiles[manual]["state"] == "disconnected"
