"""SCRAM client against a scripted server (scramp): attacks, broken servers, key cache."""

import base64
import hashlib

import pytest
from scramp import ScramException, ScramMechanism

from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.scram import ScramClient
from libervia.backend.xmpp.sasl.scram_keys import KeyCacheEntry, ScramKeyCache, ScramKeys
from tests.unit.xmpp.sasl.sasl_support import auth_info

SALT = b"0123456789abcdef"


def scramp_server(mechanism="SCRAM-SHA-256", password="pencil", channel_binding=None,
                  server_key=None):
    info = auth_info(mechanism, password, SALT, 4096)
    if server_key is not None:
        info = info[:2] + (server_key,) + info[3:]
    return ScramMechanism(mechanism).make_server(
        lambda username: info, channel_binding=channel_binding
    )


def exchange(client, server, tamper_first=None, tamper_final=None):
    """Run a whole exchange; the server's failures come back as e= messages."""
    server.set_client_first(client.client_first().decode())
    server_first = server.get_server_first()
    if tamper_first is not None:
        server_first = tamper_first(server_first)
        server.server_first = server_first
    client_final = client.respond(server_first.encode())
    try:
        server.set_client_final(client_final.decode())
    except ScramException:
        pass
    server_final = server.get_server_final()
    if tamper_final is not None:
        server_final = tamper_final(server_final)
    client.verify_server_final(server_final.encode())


@pytest.mark.parametrize(
    "mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"]
)
def test_exchange_with_scramp_succeeds(mechanism):
    client = ScramClient(mechanism, "user", "pencil")
    exchange(client, scramp_server(mechanism))
    assert client.done


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-512-PLUS"])
def test_plus_exchange_with_scramp_succeeds(mechanism):
    client = ScramClient(
        mechanism, "user", "pencil", cb_type="tls-server-end-point", cb_data=b"cb"
    )
    exchange(client, scramp_server(mechanism, channel_binding=("tls-server-end-point", b"cb")))
    assert client.done


def test_server_that_stole_only_the_stored_key_is_detected():
    """It can check our proof, but can't sign: the signature check must catch it."""
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    with pytest.raises(errors.ServerSignatureMismatch):
        exchange(client, scramp_server(server_key=b"\0" * 32))
    assert not client.done


def test_tampered_server_signature_is_detected():
    def flip(final):
        signature = bytearray(base64.b64decode(final[2:]))
        signature[0] ^= 1
        return "v=" + base64.b64encode(bytes(signature)).decode()

    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    with pytest.raises(errors.ServerSignatureMismatch):
        exchange(client, scramp_server(), tamper_final=flip)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda sf: "r=someoneelse" + sf[sf.index(","):], id="other-nonce"),
        pytest.param(
            lambda sf: "r=X" + sf[3:],
            id="first-char-changed",
        ),
    ],
)
def test_server_nonce_must_extend_the_client_nonce(tamper):
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="clientnonce")
    with pytest.raises(errors.NonceMismatch):
        exchange(client, scramp_server(), tamper_first=tamper)


def test_server_nonce_equal_to_the_client_nonce_is_refused():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="clientnonce")
    client.client_first()
    with pytest.raises(errors.NonceMismatch):
        client.receive_server_first(b"r=clientnonce,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096")


def test_low_iteration_count_is_refused_with_the_default_floor():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    with pytest.raises(errors.InsufficientIterations) as info:
        exchange(client, scramp_server(), tamper_first=lambda sf: sf.replace("i=4096", "i=1000"))
    assert "1000" in str(info.value) and "4096" in str(info.value)


def test_iteration_floor_is_configurable():
    strict = ScramClient("SCRAM-SHA-256", "user", "pencil", min_iterations=10000)
    with pytest.raises(errors.InsufficientIterations):
        exchange(strict, scramp_server())
    lax = ScramClient("SCRAM-SHA-256", "user", "pencil", min_iterations=1024)
    exchange(lax, scramp_server())
    assert lax.done


def test_absurd_iteration_count_is_malformed():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    with pytest.raises(errors.MalformedServerMessage):
        exchange(client, scramp_server(),
                 tamper_first=lambda sf: sf.replace("i=4096", "i=99999999999999999999"))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda sf: "m=must-understand," + sf, id="m-first"),
        pytest.param(lambda sf: sf + ",m=must-understand", id="m-last"),
    ],
)
def test_mandatory_extension_is_refused(tamper):
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    with pytest.raises(errors.UnsupportedExtension):
        exchange(client, scramp_server(), tamper_first=tamper)


def test_wrong_password_is_reported_by_the_server_as_invalid_proof():
    client = ScramClient("SCRAM-SHA-256", "user", "not the password")
    with pytest.raises(errors.ScramInvalidCredentials) as info:
        exchange(client, scramp_server())
    assert info.value.code == "invalid-proof"
    assert isinstance(info.value, errors.InvalidCredentials)
    assert info.value.retry is False


def test_channel_binding_mismatch_is_reported_by_the_server():
    client = ScramClient(
        "SCRAM-SHA-256-PLUS", "user", "pencil", cb_type="tls-unique", cb_data=b"mitm"
    )
    server = scramp_server("SCRAM-SHA-256-PLUS", channel_binding=("tls-unique", b"real"))
    with pytest.raises(errors.ChannelBindingError):
        exchange(client, server)


@pytest.mark.parametrize(
    "message,error,code",
    [
        (b"e=other-error", errors.ScramServerError, "other-error"),
        (b"e=no-resources", errors.ScramServerError, "no-resources"),
        (b"e=unknown-user", errors.ScramInvalidCredentials, "unknown-user"),
        (b"e=invalid\x1b[31mred", errors.ScramServerError, "invalid?[31mred"),
    ],
)
def test_server_errors_in_server_final_become_clear_exceptions(message, error, code):
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="abc")
    client.client_first()
    client.respond(b"r=abcdef,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096")
    with pytest.raises(error) as info:
        client.verify_server_final(message)
    assert info.value.code == code


def test_server_error_in_server_first_becomes_a_clear_exception():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil")
    client.client_first()
    with pytest.raises(errors.ScramServerError) as info:
        client.receive_server_first(b"e=other-error")
    assert info.value.code == "other-error"


def test_client_refuses_to_continue_after_a_failure():
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="abc")
    client.client_first()
    with pytest.raises(errors.NonceMismatch):
        client.receive_server_first(b"r=xyz,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096")
    with pytest.raises(errors.ScramError):
        client.receive_server_first(b"r=abcdef,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096")
    with pytest.raises(errors.ScramError):
        client.client_final()


def test_downgrade_protection_required_but_missing_aborts():
    client = ScramClient(
        "SCRAM-SHA-256", "user", "pencil", require_downgrade_protection=True
    )
    with pytest.raises(errors.DowngradeDetected):
        exchange(client, scramp_server())


# derived keys cache


class CountingKDF:
    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return hashlib.pbkdf2_hmac(*args)


def test_reconnection_with_the_cache_runs_no_pbkdf2():
    cache = ScramKeyCache()
    kdf = CountingKDF()
    first = ScramClient("SCRAM-SHA-256", "user", "pencil", key_cache=cache, kdf=kdf)
    exchange(first, scramp_server())
    assert kdf.calls == 1 and len(cache) == 1 and not first.used_cached_keys

    second = ScramClient("SCRAM-SHA-256", "user", "pencil", key_cache=cache, kdf=kdf)
    exchange(second, scramp_server())
    assert second.done and second.used_cached_keys
    assert kdf.calls == 1
    assert second.kdf_runs == 0
    assert cache.hits == 1


def test_keys_are_cached_only_after_the_server_proved_itself():
    cache = ScramKeyCache()
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", key_cache=cache)
    with pytest.raises(errors.ServerSignatureMismatch):
        exchange(client, scramp_server(server_key=b"\0" * 32))
    assert len(cache) == 0


def test_cache_is_keyed_on_hash_salt_and_iterations():
    cache = ScramKeyCache()
    exchange(ScramClient("SCRAM-SHA-256", "user", "pencil", key_cache=cache), scramp_server())
    kdf = CountingKDF()
    other_hash = ScramClient("SCRAM-SHA-512", "user", "pencil", key_cache=cache, kdf=kdf)
    exchange(other_hash, scramp_server("SCRAM-SHA-512"))
    assert kdf.calls == 1 and not other_hash.used_cached_keys
    assert {entry["hash"] for entry in cache.export()} == {"SHA-256", "SHA-512"}


def test_cache_export_and_load_round_trip_and_notify_changes():
    changes = []
    cache = ScramKeyCache(on_change=changes.append)
    exchange(ScramClient("SCRAM-SHA-1", "user", "pencil", key_cache=cache),
             scramp_server("SCRAM-SHA-1"))
    assert changes == [cache]
    restored = ScramKeyCache()
    truncated = dict(cache.export()[0], server_key="AAAA", salt="c2FsdA==")
    restored.load(cache.export() + [{"hash": "MD5", "salt": "??"}, truncated])
    assert len(restored) == 1
    kdf = CountingKDF()
    client = ScramClient("SCRAM-SHA-1", "user", "pencil", key_cache=restored, kdf=kdf)
    exchange(client, scramp_server("SCRAM-SHA-1"))
    assert client.done and kdf.calls == 0
    restored.clear()
    assert len(restored) == 0


def test_cache_drops_the_least_recently_used_entry():
    cache = ScramKeyCache(max_entries=2)
    keys = ScramKeys(b"c" * 32, b"s" * 32)
    entries = [KeyCacheEntry("SHA-256", bytes([n]) * 16, 4096) for n in range(3)]
    cache.put(entries[0], keys)
    cache.put(entries[1], keys)
    assert cache.get(entries[0]) is keys
    cache.put(entries[2], keys)
    assert cache.get(entries[1]) is None
    assert cache.get(entries[0]) is keys and cache.get(entries[2]) is keys
    assert "c" * 32 not in repr(keys)


def test_stale_cached_keys_fail_like_a_wrong_password():
    """Keys cached for an old password give a proof the server refuses."""
    cache = ScramKeyCache()
    exchange(ScramClient("SCRAM-SHA-256", "user", "old password", key_cache=cache),
             scramp_server(password="old password"))
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", key_cache=cache)
    with pytest.raises(errors.InvalidCredentials):
        exchange(client, scramp_server(password="pencil"))
    assert client.used_cached_keys
