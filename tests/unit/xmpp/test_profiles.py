"""Profiles: creation, options, encrypted passwords, deletion."""

import os
import stat
import types

import pytest
import pytest_twisted

from libervia.backend.core import log
from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import ConflictError, NotFound, StartupError
from libervia.backend.memory.secrets import SecretBox, SecretError
from libervia.backend.memory.storage import Storage
from libervia.backend.xmpp.profiles import ConnectionOptions, ProfileError, ProfileManager


@pytest.fixture
def local_dir(tmp_path):
    return tmp_path / "local"


@pytest.fixture
def storage(local_dir):
    storage = Storage(f"sqlite:///{local_dir / 'libervia.db'}")
    pytest_twisted.blockon(storage.start())
    pytest_twisted.blockon(storage.migrate())
    yield storage
    pytest_twisted.blockon(storage.stop())


@pytest.fixture
def profiles(storage, local_dir):
    config = Config.from_dict({"DEFAULT": {"local_dir": str(local_dir)}})
    host = types.SimpleNamespace(config=config, storage=storage)
    manager = ProfileManager(host)
    manager.load_key()
    return manager


@pytest_twisted.ensureDeferred
async def test_create_get_list_delete(profiles):
    options = ConnectionOptions(host="127.0.0.1", port=5299, mechanisms=("scram-sha-256",),
                                autoconnect=True)
    created = await profiles.create("alice", "alice@example.org", "p4ssw0rd!", options)
    assert created.jid == "alice@example.org"
    await profiles.create("bob", "bob@example.org/res", "other pass")
    assert await profiles.names() == ["alice", "bob"]

    alice = await profiles.get("alice")
    assert alice == created
    assert alice.options.mechanisms == ("SCRAM-SHA-256",)
    assert alice.options.port == 5299 and alice.options.host == "127.0.0.1"
    bob = await profiles.get("bob")
    assert bob.jid == "bob@example.org/res"
    assert bob.options == ConnectionOptions()
    assert await profiles.autoconnect_profiles() == ["alice"]

    await profiles.delete("alice")
    assert await profiles.names() == ["bob"]
    with pytest.raises(NotFound, match="alice"):
        await profiles.get("alice")
    with pytest.raises(NotFound):
        await profiles.get_password("alice")


@pytest_twisted.ensureDeferred
async def test_duplicate_profile_is_refused(profiles):
    await profiles.create("alice", "alice@example.org", "pw12345")
    with pytest.raises(ConflictError):
        await profiles.create("alice", "other@example.org", "pw12345")
    assert (await profiles.get("alice")).jid == "alice@example.org"
    # the check frontends make before asking for the password says it too
    with pytest.raises(ConflictError, match="exists already"):
        await profiles.check_new("alice", "other@example.org")
    assert await profiles.check_new("bob", " bob@example.org ") == "bob@example.org"


@pytest.mark.parametrize(
    ("name", "jid", "password", "options", "message"),
    [
        ("bad name", "a@b.c", "pw", {}, "invalid profile name"),
        ("", "a@b.c", "pw", {}, "invalid profile name"),
        ("alice\n", "a@b.c", "pw", {}, "invalid profile name"),
        ("ok", "no-user-part.example", "pw", {}, "no user part"),
        ("ok", "a@b@c", "pw", {}, "invalid JID"),
        ("ok", "a@b.c", "", {}, "password"),
        ("ok", "a@b.c", "pw", {"port": 70000}, "out of range"),
        ("ok", "a@b.c", "pw", {"mechanisms": ("DIGEST-MD5",)}, "unknown SASL"),
        ("ok", "a@b.c", "pw", {"ca_file": "/nonexistent/ca.pem"}, "CA file"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_invalid_profiles_are_refused_with_a_clear_message(
    profiles, name, jid, password, options, message
):
    with pytest.raises(ProfileError, match=message):
        await profiles.create(name, jid, password, ConnectionOptions(**options))
    assert await profiles.names() == []


@pytest_twisted.ensureDeferred
async def test_password_is_encrypted_at_rest(profiles, storage, local_dir):
    password = "correct horse battery staple"
    await profiles.create("alice", "alice@example.org", password)
    assert await profiles.get_password("alice") == password
    # the database file holds no trace of the password
    raw = b"".join(p.read_bytes() for p in local_dir.glob("libervia.db*"))
    assert password.encode() not in raw
    assert len(raw) > 0
    # the key is in its own file, readable by the owner only
    key_file = local_dir / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert key not in raw
    stored = await storage.profiles.get_privates("secrets", binary=True, profile="alice")
    assert password.encode() not in stored["password"]


@pytest_twisted.ensureDeferred
async def test_ciphertext_moved_to_another_profile_does_not_decrypt(profiles, storage):
    await profiles.create("alice", "alice@example.org", "alice password")
    await profiles.create("mallory", "mallory@example.org", "mallory password")
    token = (await storage.profiles.get_privates("secrets", binary=True,
                                                 profile="alice"))["password"]
    await storage.profiles.set_private_value("secrets", "password", token, binary=True,
                                             profile="mallory")
    with pytest.raises(SecretError, match="can't be decrypted"):
        await profiles.get_password("mallory")


@pytest_twisted.ensureDeferred
async def test_update_and_set_password(profiles):
    await profiles.create("alice", "alice@example.org", "first password")
    updated = await profiles.update("alice", port=5223, direct_tls=True)
    assert updated.options.direct_tls and updated.options.port == 5223
    assert (await profiles.get("alice")).options == updated.options
    updated = await profiles.update("alice", port=None)
    assert (await profiles.get("alice")).options.port is None
    with pytest.raises(ProfileError, match="unknown profile option"):
        await profiles.update("alice", colour="blue")
    await profiles.set_password("alice", "second password")
    assert await profiles.get_password("alice") == "second password"


@pytest_twisted.ensureDeferred
async def test_passwords_are_registered_as_secrets(profiles):
    await profiles.create("alice", "alice@example.org", "never-in-logs")
    assert log.redact("password is never-in-logs") == "password is ***"


@pytest_twisted.ensureDeferred
async def test_a_refused_profile_registers_no_secret(profiles):
    await profiles.create("alice", "alice@example.org", "first-password")
    with pytest.raises(ConflictError):
        await profiles.create("alice", "alice@example.org", "refused-password")
    with pytest.raises(ProfileError):
        await profiles.create("bad name!", "bob@example.org", "refused-too")
    assert log.redact("refused-password refused-too") == "refused-password refused-too"


@pytest_twisted.ensureDeferred
async def test_a_password_equal_to_a_profile_name_does_not_blank_the_name(profiles):
    await profiles.create("bobby", "bob@example.org", "bob's password")
    await profiles.create("alice", "alice@example.org", "bobby")
    assert log.redact("profile bobby connected") == "profile bobby connected"
    # nor one equal to a JID, or to its user part
    await profiles.create("carol", "carol@example.org", "alice@example.org")
    await profiles.create("dave", "dave@example.org", "carol")
    assert log.redact("alice@example.org carol") == "alice@example.org carol"
    assert log.redact("bob's password") == "***"


@pytest_twisted.ensureDeferred
async def test_profile_names_and_jids_are_public_from_the_start(profiles, storage):
    await profiles.create("bobby", "robert@example.org", "bob's password")
    await profiles.create("alice", "alice@example.org", "robert@example.org")
    with log._secrets_lock:  # a new backend process: nothing registered yet
        log._secrets.clear()
        log._public.clear()
        log._update_shields()
    await profiles.register_public_words()
    await profiles.get_password("alice")
    assert log.redact("bobby is robert@example.org") == "bobby is robert@example.org"


@pytest_twisted.ensureDeferred
async def test_deleting_a_profile_forgets_its_password_unless_another_has_it(profiles):
    await profiles.create("alice", "alice@example.org", "shared-secret")
    await profiles.create("bob", "bob@example.org", "shared-secret")
    await profiles.create("carol", "carol@example.org", "carol-secret")
    await profiles.delete("carol")
    assert log.redact("carol-secret") == "carol-secret"
    await profiles.delete("alice")
    assert log.redact("shared-secret") == "***"
    await profiles.delete("bob")
    assert log.redact("shared-secret") == "shared-secret"


@pytest_twisted.ensureDeferred
async def test_a_changed_password_is_forgotten_unless_another_profile_has_it(profiles):
    await profiles.create("alice", "alice@example.org", "old-password")
    await profiles.create("bob", "bob@example.org", "bob-password")
    await profiles.set_password("alice", "new-password")
    assert log.redact("old-password new-password") == "old-password ***"
    await profiles.set_password("alice", "bob-password")
    await profiles.set_password("bob", "other-password")
    assert log.redact("bob-password") == "***"  # still alice's
    # the name stays public through password changes
    await profiles.set_password("alice", "alice")
    assert log.redact("alice") == "alice"


@pytest_twisted.ensureDeferred
async def test_a_changed_jid_is_not_public_any_more(profiles):
    await profiles.create("alice", "alice@old.example", "p4ssw0rd")
    await profiles.update("alice", jid="alice@new.example")
    log.register_secret("old.example")
    assert log.redact("alice@old.example alice@new.example") == (
        "alice@*** alice@new.example")


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "secrets.key"
    SecretBox.from_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(StartupError, match="chmod 600"):
        SecretBox.from_key_file(path)


def test_damaged_key_file_is_refused(tmp_path):
    path = tmp_path / "secrets.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(StartupError, match="damaged"):
        SecretBox.from_key_file(path)


def test_other_key_does_not_decrypt(tmp_path):
    box = SecretBox.from_key_file(tmp_path / "a.key")
    other = SecretBox.from_key_file(tmp_path / "b.key")
    token = box.encrypt(b"secret", "password:alice")
    assert box.decrypt(token, "password:alice") == b"secret"
    with pytest.raises(SecretError):
        other.decrypt(token, "password:alice")
    with pytest.raises(SecretError, match="unknown format"):
        box.decrypt(b"\x02" + token[1:], "password:alice")
    tampered = bytearray(token)
    tampered[-1] ^= 1
    with pytest.raises(SecretError):
        box.decrypt(bytes(tampered), "password:alice")
