"""Choice of the SASL mechanism and of the channel binding.

The rules, in order:

* the mechanisms are tried strongest first: SCRAM-SHA-512-PLUS, SCRAM-SHA-256-PLUS,
  SCRAM-SHA-1-PLUS, SCRAM-SHA-512, SCRAM-SHA-256, SCRAM-SHA-1, then PLAIN, keeping
  only the ones the profile allows (:attr:`SASLPolicy.allowed_mechanisms`);
* a -PLUS mechanism needs TLS and a channel-binding type both sides support: with
  XEP-0440 the first type of ours (tls-exporter, tls-unique, tls-server-end-point) the
  server lists; without it, tls-unique below TLS 1.3 (the RFC 5802 default);
* on TLS 1.3 without XEP-0440 the server's type is unknown: RFC 9266 makes
  tls-exporter the default, but servers written before it (ejabberd up to 23.04) offer
  -PLUS on TLS 1.3 with tls-unique only, which TLS 1.3 does not define, and a wrong
  guess fails as "not authorized".  So plain SCRAM (``n`` flag) is used when the
  profile allows it and the server offers it; tls-exporter is tried only when -PLUS is
  the only way in (the failure then names channel binding as a possible cause);
* the server lists channel-binding types (XEP-0440) but offers no -PLUS mechanism: the
  list of mechanisms was tampered with, abort (XEP-0440 rules, kept by XEP-0474);
* -PLUS offered but no type in common: go on with plain SCRAM and the ``n`` flag, and
  require a valid XEP-0474 hash in server-first (XEP-0474 rule 6);
* plain SCRAM uses the ``y`` flag when we could bind but the server offered no -PLUS
  (the server aborts if it did offer some: a stripping attack), ``n`` otherwise;
* PLAIN only over TLS, and never for an account that has already used SCRAM
  (:attr:`SASLPolicy.scram_seen`, XEP-0474 business rules).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.channel_binding import (
    CHANNEL_BINDING_TYPES,
    TLS_1_3,
    TLS_EXPORTER,
    ChannelBindingProvider,
)
from libervia.backend.xmpp.sasl.scram import DEFAULT_MAX_ITERATIONS, DEFAULT_MIN_ITERATIONS
from libervia.backend.xmpp.sasl.scram_keys import SCRAM_MECHANISMS

PLAIN = "PLAIN"
#: every mechanism we implement, strongest first
MECHANISMS: tuple[str, ...] = SCRAM_MECHANISMS + (PLAIN,)


@dataclass(frozen=True)
class SASLPolicy:
    """Authentication settings of one profile.

    :ivar allowed_mechanisms: mechanisms the profile accepts (the order does not
        matter: the strongest offered is used); ``None`` for all of :data:`MECHANISMS`
    :ivar allowed_channel_bindings: channel-binding types accepted; ``None`` for all
    :ivar scram_seen: the account has authenticated with SCRAM before, so PLAIN is
        refused (the profile persists it from :attr:`SASLResult.scram`)
    :ivar min_iterations: lowest PBKDF2 iteration count accepted
    :ivar max_iterations: highest PBKDF2 iteration count accepted
    """

    allowed_mechanisms: tuple[str, ...] | None = None
    allowed_channel_bindings: tuple[str, ...] | None = None
    scram_seen: bool = False
    min_iterations: int = DEFAULT_MIN_ITERATIONS
    max_iterations: int = DEFAULT_MAX_ITERATIONS

    def __post_init__(self) -> None:
        if self.allowed_mechanisms is not None:
            # names come from configuration files: be lenient on case
            object.__setattr__(
                self, "allowed_mechanisms", tuple(m.upper() for m in self.allowed_mechanisms)
            )
            unknown = set(self.allowed_mechanisms) - set(MECHANISMS)
            if unknown:
                raise ValueError(
                    f"unknown SASL mechanisms {sorted(unknown)}: use some of "
                    f"{', '.join(MECHANISMS)}"
                )
        if self.allowed_channel_bindings is not None:
            object.__setattr__(
                self,
                "allowed_channel_bindings",
                tuple(t.lower() for t in self.allowed_channel_bindings),
            )
            unknown = set(self.allowed_channel_bindings) - set(CHANNEL_BINDING_TYPES)
            if unknown:
                raise ValueError(
                    f"unknown channel-binding types {sorted(unknown)}: use some of "
                    f"{', '.join(CHANNEL_BINDING_TYPES)}"
                )
        if self.min_iterations < 1 or self.max_iterations < self.min_iterations:
            raise ValueError("invalid iteration count limits")

    def allows(self, mechanism: str) -> bool:
        return self.allowed_mechanisms is None or mechanism in self.allowed_mechanisms

    def allows_channel_binding(self, cb_type: str) -> bool:
        return self.allowed_channel_bindings is None or cb_type in self.allowed_channel_bindings


@dataclass(frozen=True)
class MechanismChoice:
    """What :func:`choose_mechanism` decided.

    :ivar mechanism: mechanism name
    :ivar gs2_flag: ``"p"``, ``"y"`` or ``"n"`` for SCRAM, ``None`` for PLAIN
    :ivar cb_type: channel-binding type with ``"p"``
    :ivar require_downgrade_protection: server-first must carry a valid XEP-0474 hash
    """

    mechanism: str
    gs2_flag: str | None = None
    cb_type: str | None = None
    require_downgrade_protection: bool = False


def choose_mechanism(
    server_mechanisms: Sequence[str],
    server_channel_bindings: Sequence[str] | None,
    *,
    encrypted: bool,
    channel_binding: ChannelBindingProvider | None,
    policy: SASLPolicy,
) -> MechanismChoice:
    """Pick the mechanism and channel binding (see the module documentation).

    :param server_mechanisms: mechanisms of the ``<mechanisms/>`` feature
    :param server_channel_bindings: XEP-0440 types, ``None`` when not advertised
    :param encrypted: the stream is protected by TLS
    :param channel_binding: where the binding data come from (``None``: can't bind)
    :raises errors.NoAcceptableMechanism: nothing acceptable is offered
    :raises errors.DowngradeDetected: the advertised lists are inconsistent
    """
    offered = set(server_mechanisms)
    allowed = [m for m in MECHANISMS if policy.allows(m)]
    client_cb_types: list[str] = []
    if encrypted and channel_binding is not None:
        client_cb_types = [
            t for t in channel_binding.available_types() if policy.allows_channel_binding(t)
        ]
    can_bind = bool(client_cb_types) and any(m.endswith("-PLUS") for m in allowed)
    server_plus = [m for m in SCRAM_MECHANISMS if m.endswith("-PLUS") and m in offered]

    if can_bind and server_channel_bindings is not None and not server_plus:
        raise errors.DowngradeDetected(
            "the server lists channel-binding types but offers no -PLUS mechanism: the "
            "mechanism list may have been tampered with, authentication aborted"
        )

    scram_candidates = [
        m for m in allowed if m in SCRAM_MECHANISMS and not m.endswith("-PLUS") and m in offered
    ]
    require_ssdp = False
    if can_bind:
        plus_candidates = [m for m in allowed if m.endswith("-PLUS") and m in offered]
        if plus_candidates:
            guess_needed = (
                server_channel_bindings is None and channel_binding is not None
                and channel_binding.tls_version == TLS_1_3
                and TLS_EXPORTER in client_cb_types
            )
            if guess_needed:
                if not scram_candidates:
                    return MechanismChoice(plus_candidates[0], "p", TLS_EXPORTER)
                # the server supports channel binding, but not a type we know: "n"
                return MechanismChoice(scram_candidates[0], "n")
            cb_type = _choose_channel_binding(server_channel_bindings, client_cb_types)
            if cb_type is not None:
                return MechanismChoice(plus_candidates[0], "p", cb_type)
            require_ssdp = True

    if scram_candidates:
        if can_bind and not server_plus:
            flag = "y"
        else:
            flag = "n"
        return MechanismChoice(scram_candidates[0], flag, None, require_ssdp)
    if require_ssdp:
        raise errors.ChannelBindingError(
            "the server offers only -PLUS mechanisms with channel-binding types we don't "
            "support: can't authenticate safely"
        )

    if PLAIN in offered and policy.allows(PLAIN):
        if policy.scram_seen:
            raise errors.NoAcceptableMechanism(
                "this account used SCRAM before and the server now offers only PLAIN: "
                "refusing, it looks like a downgrade attack (if the server really "
                "changed, reset the SCRAM flag of the profile)"
            )
        if not encrypted:
            raise errors.NoAcceptableMechanism(
                "the server offers only PLAIN on an unencrypted connection: refusing to "
                "send the password in clear; enable TLS"
            )
        return MechanismChoice(PLAIN)

    offered_text = errors.sanitize_server_text(", ".join(sorted(offered))) or "nothing"
    raise errors.NoAcceptableMechanism(
        f"no acceptable SASL mechanism: the server offers {offered_text}; the profile "
        f"allows {', '.join(allowed) or 'nothing'}"
    )


def _choose_channel_binding(
    server_types: Sequence[str] | None, client_types: Sequence[str]
) -> str | None:
    if server_types is None:
        # no XEP-0440: the default type of the TLS version (client_types holds
        # tls-exporter only on TLS 1.3, handled by the caller, and tls-unique only below)
        return client_types[0] if client_types else None
    for cb_type in client_types:
        if cb_type in server_types:
            return cb_type
    return None
