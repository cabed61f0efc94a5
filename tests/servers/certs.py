"""A throwaway certificate authority for the private test servers.

Everything is generated with ``cryptography`` into a folder of the test session: a CA,
a server certificate for the virtual host (with its pubsub component and 127.0.0.1 as
alternative names) and a certificate for a host name the servers do not serve, signed by
the same CA, so that tests can check that a valid certificate for the wrong name is refused.

The signature hash is selectable because the ``tls-server-end-point`` channel binding
(RFC 5929) hashes the certificate with the hash of its signature algorithm.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HASHES = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

#: Name of the certificate that no test server serves (but that the CA signs).
WRONG_NAME = "wrong.example"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM files."""

    cert_file: Path
    key_file: Path
    names: tuple[str, ...]

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())


@dataclass(frozen=True)
class Pki:
    """The files of a test CA: ``ca_file`` is what clients must trust."""

    directory: Path
    ca_file: Path
    server: KeyPair
    wrong_name: KeyPair
    hash_name: str


def _key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Libervia test suite"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _key_usage(ca: bool) -> x509.KeyUsage:
    # a CA only signs certificates; a server only does TLS
    return x509.KeyUsage(
        digital_signature=not ca, key_encipherment=not ca, content_commitment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _leaf(
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    algorithm: hashes.HashAlgorithm,
    bits: int,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key(bits)
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, algorithm)
    )
    return key, cert


def create_pki(
    directory: Path,
    host: str = "localhost",
    extra_names: tuple[str, ...] = ("pubsub.localhost",),
    hash_name: str = "sha256",
    bits: int = 2048,
) -> Pki:
    """Create a CA and its certificates in ``directory`` (which must exist).

    :param host: the virtual host, first name of the server certificate
    :param extra_names: further DNS names of the server certificate (components)
    :param hash_name: signature hash of every certificate: ``sha256``, ``sha384`` or
        ``sha512``
    :param bits: RSA key size
    """
    try:
        algorithm = HASHES[hash_name]()
    except KeyError:
        raise ValueError(
            f"unknown signature hash {hash_name!r}: use one of {', '.join(HASHES)}"
        ) from None
    directory = Path(directory)
    ca_key = _key(bits)
    now = datetime.datetime.now(datetime.UTC)
    ca_name = _name("Libervia test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, algorithm)
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # the CA key is not needed once the certificates are signed: it is never written

    pairs = {}
    for label, names, ips in (
        ("server", (host, *extra_names), ("127.0.0.1",)),
        ("wrong-name", (WRONG_NAME,), ()),
    ):
        key, cert = _leaf(ca_key, ca_cert, names, ips, algorithm, bits)
        cert_file = directory / f"{label}.crt"
        key_file = directory / f"{label}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        pairs[label] = KeyPair(cert_file, key_file, names)
    return Pki(directory, ca_file, pairs["server"], pairs["wrong-name"], hash_name)
