"""SASL stream initializer for Twisted Words / Wokkel, with SCRAM and channel binding.

Twisted's :class:`~twisted.words.protocols.jabber.sasl.SASLInitiatingInitializer`
only knows PLAIN, DIGEST-MD5 and ANONYMOUS and ignores the data of ``<success/>``.
:class:`SASLInitializer` replaces it (it is a subclass, so code looking for the SASL
initializer by class still finds it): it picks the mechanism with
:func:`~libervia.backend.xmpp.sasl.mechanisms.choose_mechanism`, runs the exchange with
:class:`~libervia.backend.xmpp.sasl.scram.ScramClient`, checks the server signature,
turns ``<failure/>`` into :mod:`~libervia.backend.xmpp.sasl.errors` exceptions and
records what was negotiated in a :class:`SASLResult`.

Using it from the connection code::

    authenticator = SASLAuthenticator(
        jid, password, policy=SASLPolicy(scram_seen=profile.scram_seen),
        key_cache=profile_key_cache, on_authenticated=profile.remember_sasl,
    )
    factory = xmlstream.XmlStreamFactory(authenticator)   # or client_factory(...)

or, with an authenticator built elsewhere, :func:`install` on the stream in
``associateWithStream``.  After authentication, ``authenticator.sasl_result`` (and
``xmlstream.sasl_result``) tell what was negotiated.
"""

import base64
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet import defer, threads
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import client, sasl, xmlstream
from twisted.words.xish import domish

from libervia.backend.core.log import getLogger, register_secret
from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.channel_binding import (
    ChannelBindingProvider,
    from_transport,
)
from libervia.backend.xmpp.sasl.mechanisms import (
    PLAIN,
    MechanismChoice,
    SASLPolicy,
    choose_mechanism,
)
from libervia.backend.xmpp.sasl.scram import ScramClient, ServerAdvertisement
from libervia.backend.xmpp.sasl.scram_keys import ScramKeyCache
from libervia.backend.xmpp.sasl.scram_messages import b64decode_strict, saslprep

log = getLogger(__name__)

NS_SASL = sasl.NS_XMPP_SASL
NS_SASL_CB = "urn:xmpp:sasl-cb:0"

#: RFC 6120 failure condition -> (exception class, message)
_FAILURES: dict[str, tuple[type[errors.AuthenticationFailed], str]] = {
    "not-authorized": (
        errors.InvalidCredentials,
        "wrong password or unknown user: check the profile's credentials",
    ),
    "account-disabled": (
        errors.AccountDisabled,
        "the account is disabled on the server: contact its administrator",
    ),
    "credentials-expired": (
        errors.CredentialsExpired,
        "the password has expired: change it (with the server's tools) and update "
        "the profile",
    ),
    "temporary-auth-failure": (
        errors.TemporaryAuthFailure,
        "the server can't authenticate now; a new attempt will be made later",
    ),
    "aborted": (errors.AuthenticationAborted, "the authentication was aborted"),
    "encryption-required": (
        errors.EncryptionRequired,
        "the server requires encryption for this mechanism: enable TLS",
    ),
    "invalid-mechanism": (
        errors.MechanismRejected,
        "the server rejected the mechanism it offered",
    ),
    "mechanism-too-weak": (
        errors.MechanismRejected,
        "the server finds the mechanism too weak for this account",
    ),
    "invalid-authzid": (
        errors.SASLProtocolError,
        "the server refused the authorization identity",
    ),
    "incorrect-encoding": (
        errors.SASLProtocolError,
        "the server could not decode our message",
    ),
    "malformed-request": (errors.SASLProtocolError, "the server found our request malformed"),
}


@dataclass(frozen=True)
class SASLResult:
    """What a successful authentication negotiated, for the connection to report.

    :ivar mechanism: the SASL mechanism used
    :ivar channel_binding: the channel-binding type used, or ``None``
    :ivar gs2_flag: the SCRAM channel-binding flag (``p``, ``y``, ``n``), ``None`` for
        PLAIN
    :ivar tls_version: the TLS version of the stream (``"TLSv1.3"``), ``None`` if clear
    :ivar downgrade_protection: the server sent a XEP-0474 hash and it matched
    :ivar cached_keys: the SCRAM keys came from the cache (no PBKDF2 run)
    """

    mechanism: str
    channel_binding: str | None
    gs2_flag: str | None
    tls_version: str | None
    downgrade_protection: bool
    cached_keys: bool

    @property
    def scram(self) -> bool:
        """SCRAM was used: the profile must now refuse PLAIN for this account."""
        return self.mechanism.startswith("SCRAM-")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"scram": self.scram}


def _run_in_thread(function: Callable[[], None]) -> defer.Deferred:
    return threads.deferToThread(function)


def advertised_channel_bindings(features: dict) -> tuple[str, ...] | None:
    """XEP-0440 channel-binding types of the stream features, or ``None``.

    The element is a stream feature since XEP-0440 0.4; older servers put it inside
    ``<mechanisms/>``, so both places are read.
    """
    element = features.get((NS_SASL_CB, "sasl-channel-binding"))
    if element is None:
        mechanisms = features.get((NS_SASL, "mechanisms"))
        if mechanisms is not None:
            element = next(
                (
                    child
                    for child in mechanisms.elements(NS_SASL_CB, "sasl-channel-binding")
                ),
                None,
            )
    if element is None:
        return None
    types = []
    for child in element.elements(NS_SASL_CB, "channel-binding"):
        cb_type = (child.getAttribute("type") or "").strip()
        if cb_type:
            types.append(cb_type)
    return tuple(types)


class SASLInitializer(sasl.SASLInitiatingInitializer):
    """Stream initializer authenticating with SCRAM (-PLUS) or PLAIN.

    The settings come from the constructor or, when not given there, from the
    authenticator's ``sasl_policy``, ``sasl_key_cache`` and ``sasl_on_authenticated``
    attributes (so that Wokkel's ``CheckAuthInitializer``, which builds the SASL
    initializer itself, can be pointed at this class).
    """

    def __init__(
        self,
        xs: xmlstream.XmlStream,
        required: bool = True,
        *,
        policy: SASLPolicy | None = None,
        key_cache: ScramKeyCache | None = None,
        on_authenticated: Callable[[SASLResult], None] | None = None,
        channel_binding_factory: Callable[
            [xmlstream.XmlStream], ChannelBindingProvider | None
        ] | None = None,
        run_blocking: Callable[[Callable[[], None]], defer.Deferred] | None = None,
    ) -> None:
        """
        :param policy: the profile's settings (default: everything allowed)
        :param key_cache: the profile's SCRAM key cache
        :param on_authenticated: called with the :class:`SASLResult` on success (the
            profile persists ``result.scram`` as its ``scram_seen`` flag)
        :param channel_binding_factory: gives the channel-binding data of the stream;
            by default read from the TLS transport
        :param run_blocking: runs PBKDF2 outside the reactor thread and returns a
            Deferred (default: Twisted's thread pool)
        """
        super().__init__(xs, required)
        self._policy = policy
        self._key_cache = key_cache
        self._on_authenticated = on_authenticated
        self._channel_binding_factory = channel_binding_factory
        self._run_blocking = run_blocking or _run_in_thread
        self.choice: MechanismChoice | None = None
        self.result: SASLResult | None = None
        self._scram: ScramClient | None = None
        self._tls_version: str | None = None
        self._cb_advertised = False
        self._finished = False

    # settings

    def _setting(self, name: str, value: Any) -> Any:
        if value is not None:
            return value
        return getattr(self.xmlstream.authenticator, f"sasl_{name}", None)

    @property
    def policy(self) -> SASLPolicy:
        return self._setting("policy", self._policy) or SASLPolicy()

    @property
    def key_cache(self) -> ScramKeyCache | None:
        return self._setting("key_cache", self._key_cache)

    def _channel_binding(self) -> ChannelBindingProvider | None:
        factory = self._setting("channel_binding_factory", self._channel_binding_factory)
        if factory is not None:
            return factory(self.xmlstream)
        return from_transport(self.xmlstream.transport)

    # Twisted's SASLInitiatingInitializer API

    def setMechanism(self) -> None:  # noqa: N802 (Twisted API)
        """Choose the mechanism from the stream features and prepare it."""
        features = self.xmlstream.features
        mechanisms = [name.strip() for name in sasl.get_mechanisms(self.xmlstream)]
        cb_types = advertised_channel_bindings(features)
        self._cb_advertised = cb_types is not None
        channel_binding = self._channel_binding()
        encrypted = channel_binding is not None and channel_binding.tls_version is not None
        self._tls_version = channel_binding.tls_version if channel_binding else None
        policy = self.policy
        choice = choose_mechanism(
            mechanisms,
            cb_types,
            encrypted=encrypted,
            channel_binding=channel_binding,
            policy=policy,
        )
        self.choice = choice
        jid = self.xmlstream.authenticator.jid
        password = self.xmlstream.authenticator.password
        owner = getattr(self.xmlstream.authenticator, "secret_owner", None)
        register_secret(password, owner)
        log.debug(
            "SASL: server offers {mechanisms} (channel bindings: {cb_types}), using "
            "{mechanism} with flag {flag} and channel binding {cb_type}",
            mechanisms=errors.sanitize_server_text(" ".join(mechanisms)),
            cb_types=errors.sanitize_server_text(" ".join(cb_types or ())) or "-",
            mechanism=choice.mechanism,
            flag=choice.gs2_flag or "-",
            cb_type=choice.cb_type or "-",
        )
        if choice.mechanism == PLAIN:
            self.mechanism = _Plain(jid.user, password, owner)
            self._scram = None
            return
        cb_data = channel_binding.get(choice.cb_type) if choice.cb_type else None
        self._scram = ScramClient(
            choice.mechanism,
            jid.user,
            password,
            gs2_flag=choice.gs2_flag,
            cb_type=choice.cb_type,
            cb_data=cb_data,
            advertisement=ServerAdvertisement(tuple(mechanisms), cb_types),
            require_downgrade_protection=choice.require_downgrade_protection,
            min_iterations=policy.min_iterations,
            max_iterations=policy.max_iterations,
            key_cache=self.key_cache,
            secret_owner=owner,
        )
        self.mechanism = _ScramMechanism(choice.mechanism, self._scram)

    def start(self) -> defer.Deferred:
        """Send ``<auth/>`` and return a Deferred fired when authenticated."""
        self._finished = False
        self.setMechanism()
        self._deferred = defer.Deferred()
        self.xmlstream.addObserver("/challenge", self.onChallenge)
        self.xmlstream.addOnetimeObserver("/success", self.onSuccess)
        self.xmlstream.addOnetimeObserver("/failure", self.onFailure)
        self.sendAuth(self.mechanism.getInitialResponse())
        return self._deferred

    def onChallenge(self, element: domish.Element) -> None:  # noqa: N802
        """Answer a server challenge."""
        if self._finished:
            return
        try:
            data = _element_data(element, "challenge")
            if self._scram is None:
                raise errors.MalformedServerMessage("unexpected challenge for PLAIN")
            if self._scram.waiting_for_server_final:
                # RFC 6120 6.3.10: the server may send its final data in a challenge
                self._scram.verify_server_final(data)
                self.sendResponse(b"")
                return
            self._scram.receive_server_first(data)
        except errors.SASLError:
            self._abort(Failure())
            return
        if self._scram.needs_key_derivation:
            d = self._run_blocking(self._scram.derive_keys)
            d.addCallback(lambda __: self._send_client_final())
            d.addErrback(self._abort)
        else:
            self._send_client_final()

    def _send_client_final(self) -> None:
        if self._finished or self._scram is None:
            return
        try:
            self.sendResponse(self._scram.client_final())
        except errors.SASLError:
            self._abort(Failure())

    def sendResponse(self, data: bytes = b"") -> None:  # noqa: N802
        response = domish.Element((NS_SASL, "response"))
        if data:
            response.addContent(base64.b64encode(data).decode("ascii"))
        self.xmlstream.send(response)

    def onSuccess(self, success: domish.Element) -> None:  # noqa: N802
        """Check the server signature, then reset the stream."""
        if self._finished:
            return
        try:
            data = _element_data(success, "success")
            if self._scram is not None:
                if data:
                    self._scram.verify_server_final(data)
                elif not self._scram.done:
                    raise errors.ServerSignatureMissing(
                        "the server declared success without proving it knows the "
                        "password: authentication aborted"
                    )
        except errors.SASLError:
            self._fail(Failure(), close=True)
            return
        self._cleanup()
        self.result = self._make_result()
        self.xmlstream.sasl_result = self.result
        self.xmlstream.authenticator.sasl_result = self.result
        log.info(
            "authenticated with {mechanism} (channel binding: {cb}, {tls}, downgrade "
            "protection: {ssdp})",
            mechanism=self.result.mechanism,
            # the wording of "li profile info": the type bound, or none (the GS2 flag
            # "y" or "n" says why not, which is for the debug line above)
            cb=self.result.channel_binding or "none",
            tls=self.result.tls_version or "no TLS",
            ssdp="verified" if self.result.downgrade_protection else "not offered",
        )
        on_authenticated = self._setting("on_authenticated", self._on_authenticated)
        if on_authenticated is not None:
            try:
                on_authenticated(self.result)
            except Exception:
                log.failure("the SASL success callback failed")
        self.xmlstream.reset()
        self.xmlstream.sendHeader()
        self._deferred.callback(xmlstream.Reset)

    def onFailure(self, failure: domish.Element) -> None:  # noqa: N802
        """Turn ``<failure/>`` into an :class:`~errors.AuthenticationFailed`."""
        if self._finished:
            return
        condition = None
        text = ""
        for child in failure.elements():
            if child.name == "text":
                text = errors.sanitize_server_text(str(child))
            elif condition is None:
                condition = errors.sanitize_server_text(child.name)
        error_class, message = _FAILURES.get(
            condition or "", (errors.AuthenticationFailed, "the server refused to authenticate")
        )
        if condition not in _FAILURES:
            message += f" ({condition or 'no condition'})"
        if text:
            message += f"; the server said: {text}"
        choice = self.choice
        if (error_class is errors.InvalidCredentials and choice is not None
                and choice.cb_type is not None and not self._cb_advertised):
            # without XEP-0440 the binding type was the TLS version's default, which
            # some servers offering -PLUS do not support (ejabberd 23.01 on TLS 1.3)
            message += (
                f". The server may also have refused the channel binding "
                f"{choice.cb_type} of {choice.mechanism}: it does not tell which types "
                "it supports (XEP-0440); if the password is right, allow SCRAM without "
                "-PLUS for this profile"
            )
        if error_class is errors.InvalidCredentials and self._scram is not None:
            self._forget_cached_keys()
        if self._scram is not None:
            self._scram.fail()
        self._fail(Failure(error_class(message, condition, text)), close=False)

    # internals

    def _forget_cached_keys(self) -> None:
        # cached keys may be those of an old password: let the next attempt derive anew
        cache = self.key_cache
        if cache is not None and self._scram is not None and self._scram.used_cached_keys:
            entry = self._scram.cache_entry
            if entry is not None:
                cache.discard(entry)

    def _make_result(self) -> SASLResult:
        assert self.choice is not None
        scram = self._scram
        return SASLResult(
            mechanism=self.choice.mechanism,
            channel_binding=self.choice.cb_type,
            gs2_flag=self.choice.gs2_flag,
            tls_version=self._tls_version,
            downgrade_protection=bool(scram and scram.downgrade_protection_verified),
            cached_keys=bool(scram and scram.used_cached_keys),
        )

    def _cleanup(self) -> None:
        self._finished = True
        self.xmlstream.removeObserver("/challenge", self.onChallenge)
        self.xmlstream.removeObserver("/success", self.onSuccess)
        self.xmlstream.removeObserver("/failure", self.onFailure)

    def _abort(self, reason: Failure) -> None:
        """Give up during the exchange: tell the server with ``<abort/>``."""
        if self._finished:
            return
        if not reason.check(errors.SASLError):
            log.failure("unexpected error during SASL authentication", reason)
            reason = Failure(errors.AuthenticationAborted("internal error during SASL"))
        self.xmlstream.send(domish.Element((NS_SASL, "abort")))
        self._fail(reason, close=False)

    def _fail(self, reason: Failure, close: bool) -> None:
        self._cleanup()
        if self._scram is not None:
            self._scram.fail()
        log.warn("SASL authentication failed: {error}", error=reason.getErrorMessage())
        if close and self.xmlstream.transport is not None:
            # the server considers us authenticated but can't be trusted: leave
            self.xmlstream.transport.loseConnection()
        self._deferred.errback(reason)


def _element_data(element: domish.Element, what: str) -> bytes:
    """Decode the base64 payload of a SASL element (``=`` stands for empty data)."""
    text = "".join(str(element).split())
    if not text or text == "=":
        return b""
    return b64decode_strict(text, f"the <{what}/> data")


class _ScramMechanism:
    """Adapter giving Twisted's mechanism interface to a :class:`ScramClient`."""

    def __init__(self, name: str, scram: ScramClient) -> None:
        self.name = name
        self.scram = scram

    def getInitialResponse(self) -> bytes:  # noqa: N802
        return self.scram.client_first()

    def getResponse(self, challenge: bytes) -> bytes:  # noqa: N802
        return self.scram.respond(challenge)


class _Plain:
    """PLAIN (RFC 4616) with the user name and password prepared like SCRAM's."""

    name = PLAIN

    def __init__(self, username: str, password: str,
                 secret_owner: Hashable | None = None) -> None:
        self._username = saslprep(username, "user name")
        self._password = saslprep(password, "password")
        register_secret(self._password, secret_owner)

    def getInitialResponse(self) -> bytes:  # noqa: N802
        return b"\0" + self._username.encode() + b"\0" + self._password.encode()

    def getResponse(self, challenge: bytes) -> bytes:  # noqa: N802
        raise errors.MalformedServerMessage("PLAIN has no challenge")


def install(xs: xmlstream.XmlStream, **kwargs: Any) -> SASLInitializer:
    """Replace the SASL initializer of ``xs.initializers`` by a :class:`SASLInitializer`.

    Call it from ``associateWithStream`` after the base class filled the list; the
    keyword arguments go to :class:`SASLInitializer`.  Without a SASL initializer in
    the list, the new one is put after the TLS one.
    """
    initializer = SASLInitializer(xs, **kwargs)
    for index, current in enumerate(xs.initializers):
        if isinstance(current, sasl.SASLInitiatingInitializer):
            initializer.required = current.required
            xs.initializers[index] = initializer
            return initializer
    position = next(
        (
            index + 1
            for index, current in enumerate(xs.initializers)
            if isinstance(current, xmlstream.TLSInitiatingInitializer)
        ),
        len(xs.initializers),
    )
    xs.initializers.insert(position, initializer)
    return initializer


class SASLAuthenticator(client.XMPPAuthenticator):
    """Twisted's XMPP client authenticator with :class:`SASLInitializer`.

    :ivar sasl_result: the :class:`SASLResult` of the last authentication
    """

    def __init__(
        self,
        jid,
        password: str,
        *,
        policy: SASLPolicy | None = None,
        key_cache: ScramKeyCache | None = None,
        on_authenticated: Callable[[SASLResult], None] | None = None,
        configurationForTLS=None,  # noqa: N803 (Twisted's name)
        secret_owner: Hashable | None = None,
    ) -> None:
        super().__init__(jid, password, configurationForTLS=configurationForTLS)
        #: who the password belongs to, for the log redaction (see
        #: :func:`libervia.backend.core.log.register_secret`)
        self.secret_owner = secret_owner
        register_secret(password, secret_owner)
        self.sasl_policy = policy
        self.sasl_key_cache = key_cache
        self.sasl_on_authenticated = on_authenticated
        self.sasl_result: SASLResult | None = None

    def associateWithStream(self, xs: xmlstream.XmlStream) -> None:  # noqa: N802
        super().associateWithStream(xs)
        install(xs)


def client_factory(jid, password: str, **kwargs: Any) -> xmlstream.XmlStreamFactory:
    """XML stream factory authenticating with :class:`SASLAuthenticator`.

    It can be given to Wokkel's ``StreamManager`` (the base of
    ``wokkel.client.XMPPClient``) in place of the factory Wokkel builds, whose
    authenticator would use Twisted's SASL initializer.  The keyword arguments go to
    :class:`SASLAuthenticator`.
    """
    return xmlstream.XmlStreamFactory(SASLAuthenticator(jid, password, **kwargs))
