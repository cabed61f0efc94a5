"""The private test servers work as the integration tests expect.

An independent client (slixmpp, plus raw sockets for the stream features) proves that
the fixtures of :mod:`tests.servers.fixtures` give servers one can log in to over verified
TLS, with the SASL mechanisms the reference file lists, a pubsub component, and
certificates that make a wrong host name fail verification.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.servers import (
    ServerError,
    ServerInfo,
    XmppUser,
    pid_alive,
    sasl_mechanisms,
    stream_features,
    tls_context,
)
from tests.servers.fixtures import ServerPool
from tests.servers.prosody import ProsodyServer

slixmpp = pytest.importorskip("slixmpp")

pytestmark = pytest.mark.integration

TIMEOUT = 20
NS_TEST = "urn:libervia:test:0"


class LoginFailed(Exception):
    """The client did not reach a session."""


def run_client(info: ServerInfo, user: XmppUser, body=None, *, mechanism: str | None = None,
               max_tls: ssl.TLSVersion | None = None, direct_tls: bool = False):
    """Log ``user`` in with slixmpp, run ``await body(xmpp)``, disconnect.

    STARTTLS on the c2s port, or TLS from the start on the direct-TLS port; the
    certificate is checked against the test CA only. Returns ``(xmpp, result)``.
    """
    loop = asyncio.new_event_loop()
    # slixmpp binds futures to the current loop when the client is built
    asyncio.set_event_loop(loop)
    xmpp = slixmpp.ClientXMPP(user.jid, user.password, sasl_mech=mechanism)
    xmpp.loop = loop
    for plugin in ("xep_0004", "xep_0030", "xep_0060", "xep_0199"):
        xmpp.register_plugin(plugin)
    xmpp.ca_certs = str(info.ca_file)
    xmpp.enable_direct_tls = direct_tls
    xmpp.enable_starttls = not direct_tls
    if max_tls is not None:
        xmpp.ssl_context.maximum_version = max_tls
    tls_versions = []

    async def session():
        started = loop.create_future()

        def fail(reason):
            if not started.done():
                started.set_exception(LoginFailed(reason))

        xmpp.add_event_handler(
            "session_start", lambda _: started.done() or started.set_result(True)
        )
        xmpp.add_event_handler("failed_all_auth", lambda _: fail("authentication failed"))
        xmpp.add_event_handler("connection_failed", lambda e: fail(f"connection: {e}"))
        xmpp.add_event_handler("ssl_invalid_chain", lambda e: fail(f"certificate: {e}"))
        xmpp.add_event_handler("disconnected", lambda _: fail("disconnected"))
        xmpp.add_event_handler(
            "tls_success", lambda _: tls_versions.append(xmpp.socket.version())
        )
        xmpp.connect(info.address, info.direct_tls_port if direct_tls else info.c2s_port)
        try:
            await asyncio.wait_for(started, TIMEOUT)
            result = await asyncio.wait_for(body(xmpp), TIMEOUT) if body else None
        finally:
            await asyncio.wait_for(xmpp.disconnect(), TIMEOUT)
        return result

    try:
        result = loop.run_until_complete(session())
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        asyncio.set_event_loop(None)
    xmpp.test_tls_versions = tls_versions
    return xmpp, result


def scram_mechanisms(mechanisms) -> list[str]:
    return sorted(m for m in mechanisms if m.startswith("SCRAM-"))


# --- logging in -----------------------------------------------------------------------


def test_every_registered_account_logs_in_over_verified_starttls(xmpp_server):
    for user in xmpp_server.accounts:
        xmpp, _ = run_client(xmpp_server, user)
        assert xmpp.boundjid.bare == user.jid
        assert xmpp.test_tls_versions == ["TLSv1.3"]


def test_wrong_password_is_refused(xmpp_server):
    user = xmpp_server.user(0)
    with pytest.raises(LoginFailed, match="authentication failed"):
        run_client(xmpp_server, XmppUser(user.localpart, user.host, "not-" + user.password))


def test_each_offered_scram_mechanism_logs_in(xmpp_server):
    user = xmpp_server.user(1)
    for mechanism in scram_mechanisms(xmpp_server.mechanisms_tls12):
        # -PLUS with slixmpp needs tls-unique, so TLS 1.2 for every mechanism
        xmpp, _ = run_client(xmpp_server, user, mechanism=mechanism,
                             max_tls=ssl.TLSVersion.TLSv1_2)
        assert xmpp.boundjid.bare == user.jid, mechanism
        assert xmpp.test_tls_versions == ["TLSv1.2"], mechanism


def test_registered_account_can_log_in(xmpp_server):
    user = xmpp_server.register(f"new-{secrets.token_hex(3)}", secrets.token_urlsafe(10))
    xmpp, _ = run_client(xmpp_server, user)
    assert xmpp.boundjid.bare == user.jid


# --- what the servers offer -----------------------------------------------------------


def test_plain_stream_offers_only_starttls(xmpp_server):
    features = stream_features(xmpp_server.address, xmpp_server.c2s_port, xmpp_server.host)
    assert "<starttls" in features and "<required" in features
    assert "<mechanism>" not in features


def test_offered_mechanisms_match_the_reference(xmpp_server):
    info = xmpp_server
    tls13, version13 = sasl_mechanisms(info.address, info.c2s_port, info.host, info.ca_file)
    tls12, version12 = sasl_mechanisms(info.address, info.c2s_port, info.host, info.ca_file,
                                       max_version=ssl.TLSVersion.TLSv1_2)
    assert (version13, version12) == ("TLSv1.3", "TLSv1.2")
    assert tls13 == info.mechanisms
    assert tls12 == info.mechanisms_tls12
    if info.kind == "prosody":
        # SHA-1/256 only; -PLUS (tls-unique) only below TLS 1.3
        assert scram_mechanisms(tls13) == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
        assert scram_mechanisms(tls12) == [
            "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
    else:
        # SHA-1/256/512, -PLUS even on TLS 1.3
        expected = ["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                    "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS"]
        assert scram_mechanisms(tls13) == scram_mechanisms(tls12) == expected


def test_direct_tls_port_serves_the_same_mechanisms(xmpp_server):
    info = xmpp_server
    offered, version = sasl_mechanisms(info.address, info.direct_tls_port, info.host,
                                       info.ca_file, direct_tls=True)
    assert version == "TLSv1.3"
    assert offered == info.mechanisms


def test_direct_tls_login(xmpp_server):
    user = xmpp_server.user(2)
    xmpp, _ = run_client(xmpp_server, user, direct_tls=True)
    assert xmpp.boundjid.bare == user.jid
    assert xmpp.test_tls_versions == ["TLSv1.3"]


def test_direct_tls_port_presents_the_server_certificate(xmpp_server):
    info = xmpp_server
    context = tls_context(info.ca_file)
    with socket.create_connection((info.address, info.direct_tls_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=info.host) as tls:
            certificate = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    assert certificate == x509.load_pem_x509_certificate(info.cert_file.read_bytes())


# --- certificates ---------------------------------------------------------------------


def test_server_certificate_for_another_name_is_refused(xmpp_server):
    info = xmpp_server
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        sasl_mechanisms(info.address, info.c2s_port, info.host, info.ca_file,
                        server_hostname=info.wrong_name)
    # on direct TLS the name goes into SNI first: Prosody already refuses a name it does
    # not serve (unrecognized_name alert), ejabberd serves its certificate, which fails
    with pytest.raises(ssl.SSLError, match="mismatch|UNRECOGNIZED_NAME"):
        sasl_mechanisms(info.address, info.direct_tls_port, info.host, info.ca_file,
                        direct_tls=True, server_hostname=info.wrong_name)


def test_server_certificate_names_host_component_and_address(xmpp_server):
    certificate = x509.load_pem_x509_certificate(xmpp_server.cert_file.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        xmpp_server.host, xmpp_server.pubsub_service}
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert certificate.signature_hash_algorithm.name == "sha256"


def _serve_tls_once(cert_file, key_file):
    """A one-connection TLS server on loopback; returns (port, thread)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        with listener:
            listener.settimeout(TIMEOUT)
            connection, _ = listener.accept()
            with connection:
                try:
                    with context.wrap_socket(connection, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (ssl.SSLError, OSError):
                    pass  # the client refused the certificate: expected in one case

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize("expected_name, accepted", [("localhost", False), (None, True)])
def test_wrong_name_certificate_is_valid_only_for_its_own_name(
        prosody_server, expected_name, accepted):
    info = prosody_server
    port, thread = _serve_tls_once(info.wrong_name_cert_file, info.wrong_name_key_file)
    context = tls_context(info.ca_file)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            if accepted:
                # signed by the same CA: fine for the name it carries
                with context.wrap_socket(raw, server_hostname=info.wrong_name) as tls:
                    assert tls.recv(2) == b"ok"
            else:
                with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                    context.wrap_socket(raw, server_hostname=expected_name)
    finally:
        thread.join(TIMEOUT)


# --- pubsub ---------------------------------------------------------------------------


def _payload(text: str):
    from xml.etree import ElementTree as ET

    element = ET.Element(f"{{{NS_TEST}}}entry")
    element.text = text
    return element


async def _create_node(xmpp, info, node, max_items: int | None = None):
    """Create ``node``; Prosody's nodes keep 20 items unless configured otherwise."""
    config = None
    if max_items is not None:
        config = xmpp.plugin["xep_0004"].make_form(ftype="submit")
        config.add_field(var="FORM_TYPE", ftype="hidden",
                         value="http://jabber.org/protocol/pubsub#node_config")
        config.add_field(var="pubsub#max_items", value=str(max_items))
    await xmpp.plugin["xep_0060"].create_node(info.pubsub_service, node, config=config)


def _create_and_publish(info, node, items):
    async def body(xmpp):
        await _create_node(xmpp, info, node)
        for item_id, text in items:
            await xmpp.plugin["xep_0060"].publish(info.pubsub_service, node, id=item_id,
                                           payload=_payload(text))

    run_client(info, info.admin, body)


def _fetch(info, user, node):
    async def body(xmpp):
        answer = await xmpp.plugin["xep_0060"].get_items(info.pubsub_service, node)
        return {
            item["id"]: item.xml.find(f"{{{NS_TEST}}}entry").text
            for item in answer["pubsub"]["items"]
        }

    return run_client(info, user, body)[1]


def test_admin_creates_a_node_on_the_component_and_others_read_it(xmpp_server):
    node = f"test-node-{secrets.token_hex(4)}"
    items = [(f"item-{i}", f"entry {i}") for i in range(3)]
    _create_and_publish(xmpp_server, node, items)
    assert _fetch(xmpp_server, xmpp_server.user(0), node) == dict(items)


def test_fast_publishing_is_not_throttled(xmpp_server):
    node = f"burst-{secrets.token_hex(4)}"
    count = 200

    async def body(xmpp):
        await _create_node(xmpp, xmpp_server, node, max_items=count)
        started = time.monotonic()
        await asyncio.gather(*(
            xmpp.plugin["xep_0060"].publish(xmpp_server.pubsub_service, node, id=f"i{i}",
                                     payload=_payload("x" * 1000))
            for i in range(count)
        ))
        return time.monotonic() - started

    _, elapsed = run_client(xmpp_server, xmpp_server.admin, body)
    assert len(_fetch(xmpp_server, xmpp_server.user(1), node)) == count
    assert elapsed < 15, f"{count} publications took {elapsed:.1f}s"


# --- restart --------------------------------------------------------------------------


def test_stop_and_start_keep_accounts_and_items(xmpp_server):
    info = xmpp_server
    node = f"kept-{secrets.token_hex(4)}"
    _create_and_publish(info, node, [("only", "before restart")])
    user = info.register(f"kept-{secrets.token_hex(3)}", secrets.token_urlsafe(10))
    info.stop()
    try:
        assert not info.running
        with pytest.raises(OSError):
            socket.create_connection((info.address, info.c2s_port), timeout=2).close()
    finally:
        info.start()
    assert info.running
    assert _fetch(info, user, node) == {"only": "before restart"}


# --- variants -------------------------------------------------------------------------


def test_prosody_tls12_variant_offers_plus_mechanisms(xmpp_server_factory):
    info = xmpp_server_factory("prosody", tls_protocol="tlsv1_2")
    offered, version = sasl_mechanisms(info.address, info.c2s_port, info.host, info.ca_file)
    assert version == "TLSv1.2"
    assert "SCRAM-SHA-256-PLUS" in offered
    xmpp, _ = run_client(info, info.user(0), mechanism="SCRAM-SHA-256-PLUS")
    assert xmpp.test_tls_versions == ["TLSv1.2"]


def test_prosody_hashed_variant_offers_only_sha256(xmpp_server_factory):
    info = xmpp_server_factory("prosody", authentication="internal_hashed")
    offered, _ = sasl_mechanisms(info.address, info.c2s_port, info.host, info.ca_file)
    assert scram_mechanisms(offered) == ["SCRAM-SHA-256"] == scram_mechanisms(info.mechanisms)
    xmpp, _ = run_client(info, info.user(0))
    assert xmpp.boundjid.bare == info.user(0).jid


def test_ejabberd_scram_sha512_variant_over_tls12(xmpp_server_factory):
    info = xmpp_server_factory("ejabberd", password_format="scram", scram_hash="sha512",
                               tls12_only=True)
    offered, version = sasl_mechanisms(info.address, info.c2s_port, info.host, info.ca_file)
    assert version == "TLSv1.2"
    assert scram_mechanisms(offered) == ["SCRAM-SHA-512", "SCRAM-SHA-512-PLUS"]
    xmpp, _ = run_client(info, info.user(0), mechanism="SCRAM-SHA-512-PLUS")
    assert xmpp.boundjid.bare == info.user(0).jid


def test_certificate_signature_hash_is_selectable(xmpp_server_factory):
    info = xmpp_server_factory("prosody", signature_hash="sha384")
    context = tls_context(info.ca_file)
    with socket.create_connection((info.address, info.direct_tls_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=info.host) as tls:
            served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    assert served.signature_hash_algorithm.name == "sha384"
    assert info.signature_hash == "sha384"


# --- cost and clean-up ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["prosody", "ejabberd"])
def test_fresh_server_starts_and_stops_in_seconds_leaving_no_process(
        kind, xmpp_server_factory):
    # the session's server proves availability (skip or CI failure otherwise)
    xmpp_server_factory(kind)
    pool = ServerPool()
    started = time.monotonic()
    try:
        info = pool.get(kind)
        ready = time.monotonic() - started
        control = info._control
        pid = control.process.pid if kind == "prosody" else control.pid
        assert pid_alive(pid)
    finally:
        stopping = time.monotonic()
        pool.close()
    stopped = time.monotonic() - stopping
    print(f"{kind}: start with accounts {ready:.2f}s, stop {stopped:.2f}s")
    assert not pid_alive(pid)
    assert ready < 20 and stopped < 20


def test_ejabberd_start_failure_reports_its_log(xmpp_server_factory):
    xmpp_server_factory("ejabberd")  # installed and working here
    pool = ServerPool()
    try:
        with pytest.raises(ServerError) as caught:
            pool.get("ejabberd", max_items=-1)
    finally:
        pool.close()
    message = str(caught.value)
    assert "exited during start-up" in message
    assert "max_items_node" in message  # ejabberd's own words, from its log


def test_prosody_on_a_taken_port_times_out_with_its_log(prosody_server):
    pool = ServerPool()
    server = ProsodyServer(Path(tempfile.mkdtemp(prefix="libervia-test-taken-")),
                           pool.pki(), start_timeout=3)
    try:
        with socket.create_server((server.address, server.c2s_port)):
            started = time.monotonic()
            with pytest.raises(ServerError, match="not ready") as caught:
                server.start()
            assert time.monotonic() - started < 10
        assert not server.running
        assert "server.log" in str(caught.value)
    finally:
        server.stop()
        pool.close()
        shutil.rmtree(server.directory, ignore_errors=True)
