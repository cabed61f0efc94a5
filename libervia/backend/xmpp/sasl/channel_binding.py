"""TLS channel-binding data for SCRAM -PLUS mechanisms.

Three types are supported, each tying the authentication to the TLS connection so that
a man in the middle holding a valid certificate can't relay it:

``tls-exporter`` (RFC 9266)
    32 bytes exported from the TLS 1.3 key schedule with the label
    ``EXPORTER-Channel-Binding`` and an empty context.  Only offered on TLS 1.3: on
    TLS 1.2 it is safe only with the extended master secret, which pyOpenSSL can't
    tell us about.
``tls-unique`` (RFC 5929)
    The first Finished message of the latest handshake, TLS 1.2 and below only (TLS 1.3
    leaves it undefined).  In a full handshake the client sends the first Finished; in
    an abbreviated (resumed) one the server does.
``tls-server-end-point`` (RFC 5929)
    A hash of the server certificate, with the hash of the certificate's signature
    algorithm, MD5 and SHA-1 being replaced by SHA-256.  Weaker (it binds the
    certificate, not the connection) but always available.
"""

from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from libervia.backend.xmpp.sasl import errors

TLS_EXPORTER = "tls-exporter"
TLS_UNIQUE = "tls-unique"
TLS_SERVER_END_POINT = "tls-server-end-point"
#: every type we can compute, preferred first
CHANNEL_BINDING_TYPES: tuple[str, ...] = (TLS_EXPORTER, TLS_UNIQUE, TLS_SERVER_END_POINT)

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
EXPORTER_LENGTH = 32

#: name pyOpenSSL gives TLS 1.3, where tls-unique is undefined and tls-exporter the default
TLS_1_3 = "TLSv1.3"
_TLS_1_3 = TLS_1_3


@runtime_checkable
class ChannelBindingProvider(Protocol):
    """Source of channel-binding data for one connection."""

    #: protocol version name, like ``"TLSv1.3"``, or ``None`` when not encrypted
    tls_version: str | None

    def available_types(self) -> tuple[str, ...]:
        """The types :meth:`get` can compute, preferred first."""

    def get(self, cb_type: str) -> bytes:
        """The data of ``cb_type``.

        :raises errors.ChannelBindingError: the type is unknown or not available
        """


def server_end_point_hash(certificate: x509.Certificate) -> hashes.HashAlgorithm:
    """The hash RFC 5929 section 4.1 prescribes for ``certificate``.

    :raises errors.ChannelBindingError: the signature algorithm has no single hash
        (Ed25519, Ed448), for which RFC 5929 defines nothing
    """
    try:
        algorithm = certificate.signature_hash_algorithm
    except x509.UnsupportedAlgorithm:
        algorithm = None
    if algorithm is None:
        raise errors.ChannelBindingError(
            "tls-server-end-point is undefined for this certificate's signature algorithm"
        )
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        return hashes.SHA256()
    return algorithm


def server_end_point_data(certificate: x509.Certificate) -> bytes:
    """tls-server-end-point data of a certificate (hash of its DER encoding)."""
    digest = hashes.Hash(server_end_point_hash(certificate))
    digest.update(certificate.public_bytes(Encoding.DER))
    return digest.finalize()


class TLSChannelBinding:
    """Channel-binding data read from a pyOpenSSL :class:`OpenSSL.SSL.Connection`.

    After STARTTLS, Twisted's transport gives it with ``transport.getHandle()``; use
    :func:`from_transport`.
    """

    def __init__(self, connection: SSL.Connection, is_client: bool = True) -> None:
        """
        :param connection: a connection whose handshake is complete
        :param is_client: ``connection`` is the client side (the server side is only
            useful to tests and servers)
        """
        self.connection = connection
        self.is_client = is_client
        self.tls_version: str | None = connection.get_protocol_version_name()

    def __repr__(self) -> str:
        return f"<TLSChannelBinding {self.tls_version} {self.available_types()}>"

    def available_types(self) -> tuple[str, ...]:
        types = []
        if self.tls_version == _TLS_1_3:
            types.append(TLS_EXPORTER)
        elif self._first_finished() is not None:
            types.append(TLS_UNIQUE)
        try:
            server_end_point_hash(self._server_certificate())
        except errors.ChannelBindingError:
            pass
        else:
            types.append(TLS_SERVER_END_POINT)
        return tuple(types)

    def get(self, cb_type: str) -> bytes:
        if cb_type == TLS_EXPORTER:
            return self.tls_exporter()
        if cb_type == TLS_UNIQUE:
            return self.tls_unique()
        if cb_type == TLS_SERVER_END_POINT:
            return self.tls_server_end_point()
        raise errors.ChannelBindingError(f"unknown channel-binding type {cb_type!r}")

    def tls_exporter(self) -> bytes:
        """RFC 9266 data (TLS 1.3 only)."""
        if self.tls_version != _TLS_1_3:
            raise errors.ChannelBindingError(
                f"tls-exporter is only used with TLS 1.3, not {self.tls_version}"
            )
        try:
            return self.connection.export_keying_material(
                EXPORTER_LABEL, EXPORTER_LENGTH, b""
            )
        except SSL.Error:
            raise errors.ChannelBindingError("the TLS library can't export keys") from None

    def tls_unique(self) -> bytes:
        """RFC 5929 tls-unique data (TLS 1.2 and below only)."""
        if self.tls_version == _TLS_1_3:
            raise errors.ChannelBindingError("tls-unique is undefined with TLS 1.3")
        finished = self._first_finished()
        if not finished:
            raise errors.ChannelBindingError("the TLS handshake is not finished")
        return finished

    def tls_server_end_point(self) -> bytes:
        """RFC 5929 tls-server-end-point data."""
        return server_end_point_data(self._server_certificate())

    def _session_reused(self) -> bool:
        # pyOpenSSL has no public API for this; its binding exposes OpenSSL's function
        from OpenSSL._util import lib

        return bool(lib.SSL_session_reused(self.connection._ssl))

    def _first_finished(self) -> bytes | None:
        ours_first = self.is_client != self._session_reused()
        if ours_first:
            return self.connection.get_finished()
        return self.connection.get_peer_finished()

    def _server_certificate(self) -> x509.Certificate:
        if self.is_client:
            cert = self.connection.get_peer_certificate(as_cryptography=True)
        else:
            cert = self.connection.get_certificate(as_cryptography=True)
        if cert is None:
            raise errors.ChannelBindingError("the server sent no certificate")
        return cert


class StaticChannelBinding:
    """Channel-binding data known in advance (test vectors, other transports)."""

    def __init__(self, data: dict[str, bytes], tls_version: str | None = _TLS_1_3) -> None:
        self._data = dict(data)
        self.tls_version = tls_version

    def available_types(self) -> tuple[str, ...]:
        known = [t for t in CHANNEL_BINDING_TYPES if t in self._data]
        return tuple(known + [t for t in self._data if t not in known])

    def get(self, cb_type: str) -> bytes:
        try:
            return self._data[cb_type]
        except KeyError:
            raise errors.ChannelBindingError(
                f"no data for the channel-binding type {cb_type!r}"
            ) from None


def from_transport(transport: object) -> TLSChannelBinding | None:
    """Channel binding of a Twisted transport, or ``None`` if it is not TLS.

    Works on a TCP transport after ``startTLS`` and on a TLS transport
    (:class:`twisted.protocols.tls.TLSMemoryBIOProtocol`, what ``connectSSL`` gives:
    direct TLS).  Only the handle tells: the ``TLS`` attribute of the latter is the
    wrapped TCP transport's, which is false.
    """
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    try:
        handle = get_handle()
    except Exception:
        return None
    if not isinstance(handle, SSL.Connection):
        return None
    return TLSChannelBinding(handle)
