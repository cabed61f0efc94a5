"""Channel-binding data read from real pyOpenSSL connections (memory BIOs, no network)."""

import hashlib
import warnings

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from scramp import ScramMechanism

from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.channel_binding import (
    TLS_EXPORTER,
    TLS_SERVER_END_POINT,
    TLS_UNIQUE,
    TLSChannelBinding,
    from_transport,
    server_end_point_data,
    server_end_point_hash,
)
from libervia.backend.xmpp.sasl.scram import ScramClient
from tests.unit.xmpp.sasl.sasl_support import make_certificate, twisted_tls_pair


def test_tls13_offers_tls_exporter_and_both_sides_agree(tls_pair_factory):
    pair = tls_pair_factory(SSL.TLS1_3_VERSION)
    client = TLSChannelBinding(pair.client)
    server = TLSChannelBinding(pair.server, is_client=False)
    assert client.tls_version == "TLSv1.3"
    assert client.available_types() == (TLS_EXPORTER, TLS_SERVER_END_POINT)
    data = client.get(TLS_EXPORTER)
    assert len(data) == 32
    assert data == server.get(TLS_EXPORTER)
    expected = pair.server.export_keying_material(b"EXPORTER-Channel-Binding", 32, b"")
    assert data == expected
    with pytest.raises(errors.ChannelBindingError):
        client.get(TLS_UNIQUE)


def test_tls_exporter_differs_between_connections(tls_pair_factory):
    first = TLSChannelBinding(tls_pair_factory(SSL.TLS1_3_VERSION).client)
    second = TLSChannelBinding(tls_pair_factory(SSL.TLS1_3_VERSION).client)
    assert first.get(TLS_EXPORTER) != second.get(TLS_EXPORTER)


def test_tls12_offers_tls_unique_from_the_client_finished(tls_pair_factory):
    pair = tls_pair_factory(SSL.TLS1_2_VERSION)
    client = TLSChannelBinding(pair.client)
    server = TLSChannelBinding(pair.server, is_client=False)
    assert client.tls_version == "TLSv1.2"
    assert client.available_types() == (TLS_UNIQUE, TLS_SERVER_END_POINT)
    unique = client.get(TLS_UNIQUE)
    # full handshake: the client's Finished comes first
    assert unique == pair.client.get_finished() == pair.server.get_peer_finished()
    assert unique == server.get(TLS_UNIQUE)
    with pytest.raises(errors.ChannelBindingError):
        client.get(TLS_EXPORTER)


def test_tls12_resumed_session_uses_the_server_finished(tls_pair_factory):
    first = tls_pair_factory(SSL.TLS1_2_VERSION)
    session = first.client.get_session()
    resumed = tls_pair_factory(
        SSL.TLS1_2_VERSION,
        session=session,
        server_context=first.server_context,
        client_context=first.client_context,
    )
    client = TLSChannelBinding(resumed.client)
    assert client._session_reused()
    unique = client.get(TLS_UNIQUE)
    # abbreviated handshake: the server's Finished comes first
    assert unique == resumed.client.get_peer_finished() == resumed.server.get_finished()
    assert unique == TLSChannelBinding(resumed.server, is_client=False).get(TLS_UNIQUE)


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_tls_server_end_point_hashes_the_server_certificate(
    tls_pair_factory, rsa_certificate, version
):
    pair = tls_pair_factory(version)
    certificate = rsa_certificate[0]
    expected = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    assert TLSChannelBinding(pair.client).get(TLS_SERVER_END_POINT) == expected
    assert TLSChannelBinding(pair.server, is_client=False).get(TLS_SERVER_END_POINT) == (
        expected
    )


def test_tls_server_end_point_uses_sha384_for_an_ecdsa_sha384_certificate(
    tls_pair_factory, ec_certificate
):
    certificate, key = ec_certificate
    pair = tls_pair_factory(SSL.TLS1_3_VERSION, certificate, key)
    data = TLSChannelBinding(pair.client).get(TLS_SERVER_END_POINT)
    assert data == hashlib.sha384(certificate.public_bytes(Encoding.DER)).digest()


def _legacy_certificate(digest: str):
    """A certificate signed with MD5 or SHA-1 (cryptography refuses to make them)."""
    from OpenSSL import crypto

    key, _ = make_certificate("rsa")[1], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pkey = crypto.PKey.from_cryptography_key(key)
        cert = crypto.X509()
        cert.get_subject().CN = "example.org"
        cert.set_issuer(cert.get_subject())
        cert.set_pubkey(pkey)
        cert.gmtime_adj_notBefore(0)
        cert.gmtime_adj_notAfter(3600)
        cert.set_serial_number(1)
        cert.sign(pkey, digest)
        return cert.to_cryptography()


@pytest.mark.parametrize(
    "certificate_factory,expected",
    [
        (lambda: _legacy_certificate("md5"), hashes.SHA256),
        (lambda: _legacy_certificate("sha1"), hashes.SHA256),
        (lambda: make_certificate("rsa", hashes.SHA256())[0], hashes.SHA256),
        (lambda: make_certificate("rsa", hashes.SHA512())[0], hashes.SHA512),
        (lambda: make_certificate("ec", hashes.SHA384())[0], hashes.SHA384),
    ],
    ids=["md5", "sha1", "sha256", "sha512", "ecdsa-sha384"],
)
def test_tls_server_end_point_hash_choice(certificate_factory, expected):
    certificate = certificate_factory()
    assert isinstance(server_end_point_hash(certificate), expected)
    digest = hashlib.new(expected.name, certificate.public_bytes(Encoding.DER)).digest()
    assert server_end_point_data(certificate) == digest


def test_tls_server_end_point_is_undefined_for_ed25519(tls_pair_factory):
    certificate, key = make_certificate("ed25519")
    with pytest.raises(errors.ChannelBindingError):
        server_end_point_hash(certificate)
    pair = tls_pair_factory(SSL.TLS1_3_VERSION, certificate, key)
    assert TLSChannelBinding(pair.client).available_types() == (TLS_EXPORTER,)


def test_tls_unique_binds_a_scram_exchange_end_to_end(tls_pair_factory):
    """Client and scramp server each read their own side of the same TLS connection."""
    pair = tls_pair_factory(SSL.TLS1_2_VERSION)
    client_data = TLSChannelBinding(pair.client).get(TLS_UNIQUE)
    server_data = TLSChannelBinding(pair.server, is_client=False).get(TLS_UNIQUE)
    mechanism = ScramMechanism("SCRAM-SHA-256-PLUS")
    info = mechanism.make_auth_info("pencil")
    server = mechanism.make_server(lambda u: info, channel_binding=(TLS_UNIQUE, server_data))
    client = ScramClient(
        "SCRAM-SHA-256-PLUS", "user", "pencil", cb_type=TLS_UNIQUE, cb_data=client_data
    )
    server.set_client_first(client.client_first().decode())
    server.set_client_final(client.respond(server.get_server_first().encode()).decode())
    client.verify_server_final(server.get_server_final().encode())
    assert client.done


class _Transport:
    def __init__(self, handle, tls=True):
        self._handle = handle
        self.TLS = tls

    def getHandle(self):  # noqa: N802 (Twisted API)
        return self._handle


def test_from_transport_reads_the_tls_connection(tls_pair_factory):
    pair = tls_pair_factory(SSL.TLS1_3_VERSION)
    binding = from_transport(_Transport(pair.client))
    assert binding is not None and binding.get(TLS_EXPORTER) == (
        TLSChannelBinding(pair.client).get(TLS_EXPORTER)
    )
    assert from_transport(_Transport(object())) is None
    # connectSSL's transport (direct TLS) forwards TLS=False from the TCP one under it
    assert from_transport(_Transport(pair.client, tls=False)) is not None
    assert from_transport(object()) is None


def test_unknown_type_is_refused(tls_pair_factory):
    binding = TLSChannelBinding(tls_pair_factory(SSL.TLS1_3_VERSION).client)
    with pytest.raises(errors.ChannelBindingError):
        binding.get("tls-something")


# Twisted's certificate options still hand pyOpenSSL objects to pyOpenSSL
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")
def test_from_transport_on_twisted_tls_protocols(rsa_certificate):
    """The pyOpenSSL connection under Twisted's TLS transport is what gets read."""
    client, server = twisted_tls_pair(rsa_certificate)
    client_binding = from_transport(client)
    server_binding = TLSChannelBinding(server.getHandle(), is_client=False)
    assert client_binding.tls_version == "TLSv1.3"
    assert client_binding.get(TLS_EXPORTER) == server_binding.get(TLS_EXPORTER)
    assert client_binding.get(TLS_SERVER_END_POINT) == (
        hashlib.sha256(rsa_certificate[0].public_bytes(Encoding.DER)).digest()
    )
