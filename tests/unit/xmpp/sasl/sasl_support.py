"""Helpers of the SASL tests: certificates, in-memory TLS, a scripted XMPP SASL server."""

import base64
import datetime
import hashlib
import hmac
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from scramp import ScramException, ScramMechanism
from twisted.internet import defer
from twisted.words.protocols.jabber import jid, xmlstream
from twisted.words.xish import domish

from libervia.backend.core import log
from libervia.backend.xmpp.sasl.channel_binding import StaticChannelBinding
from libervia.backend.xmpp.sasl.initializer import NS_SASL, NS_SASL_CB, SASLInitializer

PASSWORD = "pencil"
USER_JID = "user@example.org"


# certificates and TLS


def make_certificate(key_type: str = "rsa", hash_algorithm=None):
    """A self-signed certificate for example.org and its key."""
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif key_type == "ec":
        key = ec.generate_private_key(ec.SECP384R1())
    elif key_type == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.org")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if key_type == "ed25519":
        hash_algorithm = None
    elif hash_algorithm is None:
        hash_algorithm = hashes.SHA256()
    return builder.sign(key, hash_algorithm), key


@pytest.fixture(scope="session")
def rsa_certificate():
    return make_certificate("rsa", hashes.SHA256())


@pytest.fixture(scope="session")
def ec_certificate():
    return make_certificate("ec", hashes.SHA384())


def _context(method_version: int, certificate=None, key=None, session_cache=True):
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(method_version)
    context.set_max_proto_version(method_version)
    if certificate is not None:
        context.use_certificate(certificate)
        context.use_privatekey(key)
    if not session_cache:
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return context


def _pump(client: SSL.Connection, server: SSL.Connection) -> None:
    """Move bytes between the two memory BIOs until both handshakes are done."""
    for _ in range(50):
        progress = False
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        for source, target in ((client, server), (server, client)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                target.bio_write(data)
                progress = True
        if not progress:
            break
    # application data lets TLS 1.3 deliver its tickets and finish both sides
    client.send(b"ping")
    server.bio_write(client.bio_read(65536))
    assert server.recv(16) == b"ping"
    server.send(b"pong")
    client.bio_write(server.bio_read(65536))
    assert client.recv(16) == b"pong"


class TLSPair:
    """A client and a server :class:`SSL.Connection` joined by memory BIOs."""

    def __init__(
        self, version: int, certificate, key, session=None, server_context=None,
        client_context=None,
    ):
        if server_context is None:
            server_context = _context(version, certificate, key)
            server_context.set_session_id(b"libervia-tests")
        self.server_context = server_context
        self.client_context = client_context or _context(version)
        self.server = SSL.Connection(self.server_context, None)
        self.server.set_accept_state()
        self.client = SSL.Connection(self.client_context, None)
        self.client.set_connect_state()
        if session is not None:
            self.client.set_session(session)
        _pump(self.client, self.server)


@pytest.fixture
def tls_pair_factory(rsa_certificate):
    cert, key = rsa_certificate

    def factory(version, certificate=None, key_=None, **kwargs):
        return TLSPair(
            version,
            certificate or cert,
            key_ or key,
            **kwargs,
        )

    return factory


def twisted_tls_pair(certificate_and_key, max_version=None):
    """Client and server ``TLSMemoryBIOProtocol`` after their handshake (in memory).

    :param max_version: a :class:`twisted.internet.ssl.TLSVersion` capping the client
    """
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )
    from twisted.internet import ssl
    from twisted.internet.protocol import Factory, Protocol
    from twisted.protocols.tls import TLSMemoryBIOFactory
    from twisted.test.iosim import connectedServerAndClient

    certificate, key = certificate_and_key
    pem = certificate.public_bytes(Encoding.PEM) + key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    server_options = ssl.PrivateCertificate.loadPEM(pem).options()
    client_options = ssl.CertificateOptions(lowerMaximumSecurityTo=max_version)
    server_factory = TLSMemoryBIOFactory(server_options, False, Factory.forProtocol(Protocol))
    client_factory = TLSMemoryBIOFactory(client_options, True, Factory.forProtocol(Protocol))
    client, server, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None), lambda: client_factory.buildProtocol(None)
    )
    client.write(b"hello")
    pump.flush()
    return client, server


# SCRAM server side


def auth_info(mechanism: str, password: str, salt: bytes, iterations: int):
    """(salt, StoredKey, ServerKey, iterations), computed like a server does."""
    name = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}[
        mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")
    ]
    salted = hashlib.pbkdf2_hmac(name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", name).digest()
    server_key = hmac.new(salted, b"Server Key", name).digest()
    return salt, hashlib.new(name, client_key).digest(), server_key, iterations


class ScriptedServer:
    """The server half of an XMPP SASL exchange over a fake :class:`XmlStream`.

    SCRAM is done by the ``scramp`` package; the hooks let a test tamper with the
    messages as an attacker or a broken server would.

    :ivar sent: elements the client sent
    """

    def __init__(
        self,
        xs: xmlstream.XmlStream,
        password: str = PASSWORD,
        salt: bytes = b"0123456789abcdef",
        iterations: int = 4096,
        channel_binding: tuple[str, bytes] | None = None,
        server_key: bytes | None = None,
        tamper_first: Callable[[str], str] | None = None,
        tamper_final: Callable[[str], str] | None = None,
        final_in_challenge: bool = False,
    ) -> None:
        self.xs = xs
        self.password = password
        self.salt = salt
        self.iterations = iterations
        self.channel_binding = channel_binding
        self.server_key = server_key
        self.tamper_first = tamper_first
        self.tamper_final = tamper_final
        self.final_in_challenge = final_in_challenge
        self.sent: list = []
        self.scram = None
        self.mechanism = None
        self._pending: list[bytes] = []
        self._delivering = False
        xs.send = self.receive

    def receive(self, obj) -> None:
        self.sent.append(obj)
        if not isinstance(obj, domish.Element):
            return
        if obj.name == "auth":
            self.mechanism = obj["mechanism"]
            data = base64.b64decode(str(obj))
            if self.mechanism == "PLAIN":
                return self._answer_plain(data)
            self._start_scram(data.decode())
        elif obj.name == "response":
            self._finish_scram(base64.b64decode(str(obj)).decode())
        elif obj.name == "abort":
            self.push_failure("aborted")

    def _answer_plain(self, data: bytes) -> None:
        if data == b"\0user\0" + self.password.encode():
            self.push("success")
        else:
            self.push_failure("not-authorized")

    def _start_scram(self, client_first: str) -> None:
        mechanism = ScramMechanism(self.mechanism)
        info = auth_info(self.mechanism, self.password, self.salt, 4096)
        if self.server_key is not None:
            info = info[:2] + (self.server_key,) + info[3:]
        self.scram = mechanism.make_server(
            lambda username: info, channel_binding=self.channel_binding
        )
        self.scram.set_client_first(client_first)
        server_first = self.scram.get_server_first()
        if self.iterations != 4096:
            server_first = server_first.replace(",i=4096", f",i={self.iterations}")
        if self.tamper_first is not None:
            server_first = self.tamper_first(server_first)
        # scramp signs what it believes it sent: keep it in sync with the tampering
        self.scram.server_first = server_first
        self.push("challenge", server_first.encode())

    def _finish_scram(self, client_final: str) -> None:
        if self.scram is None:
            return  # empty response after a final challenge
        scram, self.scram = self.scram, None
        try:
            scram.set_client_final(client_final)
        except ScramException:
            self.push_failure("not-authorized")
            return
        server_final = scram.get_server_final()
        if self.tamper_final is not None:
            server_final = self.tamper_final(server_final)
        if self.final_in_challenge:
            self.push("challenge", server_final.encode())
            self.push("success")
        else:
            self.push("success", server_final.encode())

    def push(self, name: str, data: bytes | None = None) -> None:
        element = domish.Element((NS_SASL, name))
        if data is not None:
            element.addContent(base64.b64encode(data).decode() or "=")
        self._deliver(element.toXml().encode())

    def push_failure(self, condition: str, text: str | None = None) -> None:
        element = domish.Element((NS_SASL, "failure"))
        element.addElement(condition)
        if text is not None:
            element.addElement("text", content=text)
        self._deliver(element.toXml().encode())

    def _deliver(self, data: bytes) -> None:
        # the XML parser is not re-entrant: a reply to what the client sends while
        # handling our previous element waits until that element is processed
        self._pending.append(data)
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._pending:
                self.xs.dataReceived(self._pending.pop(0))
        finally:
            self._delivering = False


def make_stream(password: str = PASSWORD) -> xmlstream.XmlStream:
    """An XmlStream past its header, with no network below it."""
    authenticator = xmlstream.Authenticator()
    authenticator.jid = jid.JID(USER_JID)
    authenticator.password = password
    xs = xmlstream.XmlStream(authenticator)
    xs.send = lambda obj: None
    xs.connectionMade()
    xs.dataReceived(
        b"<stream:stream xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' "
        b"from='example.org' id='12345' version='1.0'>"
    )
    return xs


def set_features(
    xs: xmlstream.XmlStream,
    mechanisms: list[str],
    channel_bindings: list[str] | None = None,
) -> None:
    features = {}
    element = domish.Element((NS_SASL, "mechanisms"))
    for name in mechanisms:
        element.addElement("mechanism", content=name)
    features[(NS_SASL, "mechanisms")] = element
    if channel_bindings is not None:
        cb = domish.Element((NS_SASL_CB, "sasl-channel-binding"))
        for cb_type in channel_bindings:
            cb.addElement("channel-binding")["type"] = cb_type
        features[(NS_SASL_CB, "sasl-channel-binding")] = cb
    xs.features = features


def run_now(function):
    """Synchronous stand-in for deferToThread: the tests have no reactor running."""
    return defer.maybeDeferred(function)


def make_initializer(xs, binding=None, tls_version="TLSv1.3", **kwargs) -> SASLInitializer:
    if binding is None and tls_version is not None:
        binding = StaticChannelBinding({}, tls_version)
    return SASLInitializer(
        xs,
        channel_binding_factory=lambda stream: binding,
        run_blocking=run_now,
        **kwargs,
    )


def result_of(d: defer.Deferred):
    """The result of a fired Deferred: the value, or the exception it failed with."""
    outcome = []
    d.addBoth(outcome.append)
    assert outcome, "the Deferred has not fired"
    value = outcome[0]
    if hasattr(value, "value") and hasattr(value, "trap"):
        return value.value
    return value


@pytest.fixture(autouse=True)
def _forget_test_secrets():
    """Unregister the passwords a test registered, so they don't redact other tests' logs.

    Test passwords are ordinary words ("pencil", "new one"...): left registered, they
    would turn into ``***`` in the log lines of unrelated tests.
    """
    before = set(log._secrets)
    yield
    for secret in set(log._secrets) - before:
        log.unregister_secret(secret)


@pytest.fixture
def debug_logs():
    """Set the debug level and collect every formatted log line."""
    from twisted.logger import formatEvent, globalLogPublisher

    events = []
    previous = log.get_level()
    log.set_level("debug")
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(e) or "" for e in events] + [repr(e) for e in events]
    globalLogPublisher.removeObserver(events.append)
    log.set_level(previous)
