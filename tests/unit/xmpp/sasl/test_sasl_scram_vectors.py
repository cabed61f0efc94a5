"""The published SCRAM test vectors, and the XEP-0474 example, with fixed nonces."""

import base64

import precis_i18n
import pytest
from hypothesis import given
from hypothesis import strategies as st

from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.scram import ScramClient, ServerAdvertisement
from libervia.backend.xmpp.sasl.scram_keys import HASHES
from libervia.backend.xmpp.sasl.scram_messages import escape_saslname, saslprep

SHA1_NONCE = "fyko+d2lbbFgONRv9qkxdawL"
SHA1_SERVER_FIRST = (
    b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
)
SHA1_NONCE_FULL = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
RFC7677_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC7677_NONCE_FULL = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC7677_SERVER_FIRST = (
    f"r={RFC7677_NONCE_FULL},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".encode()
)

# (mechanism, nonce, server-first, cb type, cb data, client-first, client-final, server-final)
VECTORS = [
    pytest.param(
        "SCRAM-SHA-1", SHA1_NONCE, SHA1_SERVER_FIRST, None, None,
        b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        f"c=biws,r={SHA1_NONCE_FULL},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        id="RFC5802-SHA-1",
    ),
    pytest.param(
        "SCRAM-SHA-256", RFC7677_NONCE, RFC7677_SERVER_FIRST, None, None,
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        f"c=biws,r={RFC7677_NONCE_FULL},"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        id="RFC7677-SHA-256",
    ),
    pytest.param(
        "SCRAM-SHA-512", RFC7677_NONCE, RFC7677_SERVER_FIRST, None, None,
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        f"c=biws,r={RFC7677_NONCE_FULL},"
        "p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwn"
        "YPJQ==",
        b"v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2r"
        b"R7N7Zw==",
        id="SHA-512",
    ),
    pytest.param(
        "SCRAM-SHA-1-PLUS", SHA1_NONCE, SHA1_SERVER_FIRST, "tls-unique", b"xxx",
        b"p=tls-unique,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        f"c=cD10bHMtdW5pcXVlLCx4eHg=,r={SHA1_NONCE_FULL},p=/63TtbB5lIS6610+k4/luJMJqAI=",
        b"v=GCPHy5gy1sRwXTCbwNhiiWIzLtU=",
        id="SHA-1-PLUS-tls-unique",
    ),
    pytest.param(
        "SCRAM-SHA-256-PLUS", RFC7677_NONCE, RFC7677_SERVER_FIRST, "tls-unique", b"xxx",
        b"p=tls-unique,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        f"c=cD10bHMtdW5pcXVlLCx4eHg=,r={RFC7677_NONCE_FULL},"
        "p=v0J7PaQUPWowoTrwRLCKLzIZBpNUhWFlTrUKI1j9DpM=",
        b"v=XjAev9iHBOvTxT+eNzBaFmP1IrqWah2PpZAa0wQrfY4=",
        id="SHA-256-PLUS-tls-unique",
    ),
    pytest.param(
        "SCRAM-SHA-512-PLUS", RFC7677_NONCE, RFC7677_SERVER_FIRST, "tls-server-end-point",
        b"imap://elwood.innosoft.com/",
        b"p=tls-server-end-point,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsaW1hcDovL2Vsd29vZC5pbm5vc29mdC5jb20v,"
        f"r={RFC7677_NONCE_FULL},"
        "p=Lrbr64QBLm57rPiUjNzRxRpy5SmWXr9uo1YaZamnGl5eJlvHL+VO3EogXgUmr8ht+aJoS3d2XOSNN6RU"
        "iA05sQ==",
        b"v=mAlQYGd+jaCA+/6Ayj8wRQLKnuxQhjSabvJW4XqtPzjXayzXxbIElZP27ANJa7yNfb54XATe9O0/w1cN"
        b"xvsRfg==",
        id="SHA-512-PLUS-tls-server-end-point",
    ),
]


@pytest.mark.parametrize(
    "mechanism,nonce,server_first,cb_type,cb_data,client_first,client_final,server_final",
    VECTORS,
)
def test_published_vector_is_reproduced_exactly(
    mechanism, nonce, server_first, cb_type, cb_data, client_first, client_final,
    server_final,
):
    client = ScramClient(
        mechanism, "user", "pencil", nonce=nonce, cb_type=cb_type, cb_data=cb_data
    )
    assert client.client_first() == client_first
    assert client.respond(server_first) == client_final.encode()
    client.verify_server_final(server_final)
    assert client.done
    assert client.kdf_runs == 1


def test_rfc5802_keys_match_the_published_intermediate_values():
    client = ScramClient("SCRAM-SHA-1", "user", "pencil", nonce=SHA1_NONCE)
    client.client_first()
    client.receive_server_first(SHA1_SERVER_FIRST)
    client.derive_keys()
    keys = client._keys
    stored_key = HASHES["SHA-1"].hash(keys.client_key)
    assert base64.b64encode(stored_key) == b"6dlGYMOdZcOPutkcNY8U2g7vK9Y="
    assert base64.b64encode(keys.server_key) == b"D+CSWLOshSulAsxiupA+qs2/fTE="


def test_xep_0474_example_hash():
    advertisement = ServerAdvertisement(
        ("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"), ("tls-server-end-point", "tls-exporter")
    )
    assert advertisement.ssdp_string() == (
        b"SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1ftls-exporter\x1etls-server-end-point"
    )
    digest = advertisement.ssdp_hash(HASHES["SHA-1"])
    assert base64.b64encode(digest) == b"G6k/rBLDqgOhRRaCuuatSDFkJ08="


def test_xep_0474_legacy_hash_of_the_d_attribute():
    """Before XEP-0474 0.4 the attribute was "d" and the separators "," and "|".

    Deployed servers still send it (Prosody's community module did until 0.4); the
    expected value is SHA-1 of "SCRAM-SHA-1,SCRAM-SHA-1-PLUS|tls-exporter,tls-server-end-point".
    """
    advertisement = ServerAdvertisement(
        ("SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"), ("tls-server-end-point", "tls-exporter")
    )
    assert advertisement.ssdp_string(legacy=True) == (
        b"SCRAM-SHA-1,SCRAM-SHA-1-PLUS|tls-exporter,tls-server-end-point"
    )
    digest = advertisement.ssdp_hash(HASHES["SHA-1"], legacy=True)
    assert base64.b64encode(digest) == b"dRc3RenuSY9ypgPpERowoaySQZY="


@pytest.mark.parametrize(
    "attributes,verified",
    [
        (",d=dRc3RenuSY9ypgPpERowoaySQZY=", True),
        (",h=G6k/rBLDqgOhRRaCuuatSDFkJ08=,d=dRc3RenuSY9ypgPpERowoaySQZY=", True),
        (",d=G6k/rBLDqgOhRRaCuuatSDFkJ08=", False),
        (",h=G6k/rBLDqgOhRRaCuuatSDFkJ08=,d=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", False),
    ],
    ids=["legacy", "both", "legacy-with-new-format", "one-wrong"],
)
def test_xep_0474_d_attribute_is_verified_too(attributes, verified):
    client = ScramClient(
        "SCRAM-SHA-1",
        "user",
        "pencil",
        nonce="abc",
        advertisement=ServerAdvertisement(
            ("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"), ("tls-server-end-point", "tls-exporter")
        ),
    )
    client.client_first()
    server_first = f"r=abcdef,s=QSXCR+Q6sek8bf92,i=4096{attributes}".encode()
    if verified:
        client.respond(server_first)
        assert client.downgrade_protection_verified
    else:
        with pytest.raises(errors.DowngradeDetected):
            client.respond(server_first)


def test_xep_0474_hash_without_xep_0440_has_no_channel_binding_part():
    advertisement = ServerAdvertisement(("SCRAM-SHA-256", "PLAIN", "SCRAM-SHA-1"))
    assert advertisement.ssdp_string() == b"PLAIN\x1eSCRAM-SHA-1\x1eSCRAM-SHA-256"


def test_xep_0474_example_exchange_is_verified():
    """The server-first of the XEP-0474 example, checked against its advertisement."""
    nonce = "12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6"
    server_first = base64.b64decode(
        "cj0xMkM0Q0Q1Qy1FMzhFLTRBOTgtOEY2RC0xNUMzOEY1MUNDQzZhMDkxMTdhNi1hYzUwLTRmMmYtOTNm"
        "MS05Mzc5OWMyYmRkZjYscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5NixoPUc2ay9yQkxEcWdPaFJSYUN1"
        "dWF0U0RGa0owOD0="
    )
    client = ScramClient(
        "SCRAM-SHA-1-PLUS",
        "user",
        "pencil",
        nonce=nonce,
        cb_type="tls-exporter",
        cb_data=b"THIS IS FAKE CB DATA",
        advertisement=ServerAdvertisement(
            ("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"), ("tls-server-end-point", "tls-exporter")
        ),
    )
    assert client.client_first() == f"p=tls-exporter,,n=user,r={nonce}".encode()
    client.respond(server_first)
    assert client.downgrade_protection_verified


def test_xep_0474_mismatch_aborts():
    nonce = "12C4CD5C-E38E-4A98-8F6D-15C38F51CCC6"
    client = ScramClient(
        "SCRAM-SHA-1",
        "user",
        "pencil",
        nonce=nonce,
        # a MITM removed SCRAM-SHA-1-PLUS from what the client saw
        advertisement=ServerAdvertisement(("SCRAM-SHA-1",), ("tls-server-end-point",)),
    )
    client.client_first()
    with pytest.raises(errors.DowngradeDetected):
        client.respond(
            f"r={nonce}abc,s=QSXCR+Q6sek8bf92,i=4096,h=G6k/rBLDqgOhRRaCuuatSDFkJ08=".encode()
        )


@pytest.mark.parametrize(
    "name,escaped",
    [("user", "user"), ("a,b", "a=2Cb"), ("a=b", "a=3Db"), ("=,", "=3D=2C")],
)
def test_user_name_escaping(name, escaped):
    assert escape_saslname(name) == escaped
    client = ScramClient("SCRAM-SHA-256", name, "pencil", nonce="abc")
    assert client.client_first() == f"n,,n={escaped},r=abc".encode()


def test_password_is_prepared_with_opaque_string():
    # non-ASCII spaces become ASCII spaces, and the result is NFC
    assert saslprep("a\u00a0b") == "a b"
    assert saslprep("e\u0301") == "\u00e9"
    with pytest.raises(errors.UnusableCredentials) as info:
        saslprep("bad\x07password")
    assert "bad\x07password" not in str(info.value)
    with pytest.raises(errors.UnusableCredentials):
        ScramClient("SCRAM-SHA-256", "user", "")


PRINTABLE_ASCII = "".join(map(chr, range(0x20, 0x7F)))


@given(st.text(alphabet=PRINTABLE_ASCII, min_size=1))
def test_printable_ascii_is_prepared_as_the_precis_profile_prepares_it(value):
    # saslprep takes a short cut for these: it must not change the result
    assert saslprep(value) == precis_i18n.get_profile("OpaqueString").enforce(value)


@pytest.mark.parametrize("nonce", ["with space", "with,comma", "caf\u00e9", "del\x7f",
                                   "tab\t"])
def test_nonce_outside_printable_ascii_is_refused(nonce):
    with pytest.raises(ValueError):
        ScramClient("SCRAM-SHA-256", "user", "pencil", nonce=nonce)
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="abc")
    client.client_first()
    server_first = f"r=abc{nonce},s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096".encode()
    with pytest.raises(errors.MalformedServerMessage):
        client.receive_server_first(server_first)


def test_prepared_password_gives_the_same_proof_as_its_canonical_form():
    def final(password):
        client = ScramClient("SCRAM-SHA-256", "user", password, nonce=RFC7677_NONCE)
        client.client_first()
        return client.respond(RFC7677_SERVER_FIRST)

    assert final("p\u00e9ncil") == final("pe\u0301ncil")


def test_random_nonces_differ_and_are_long():
    first = ScramClient("SCRAM-SHA-256", "user", "pencil").client_first()
    second = ScramClient("SCRAM-SHA-256", "user", "pencil").client_first()
    assert first != second
    assert len(first.split(b"r=")[1]) >= 24
