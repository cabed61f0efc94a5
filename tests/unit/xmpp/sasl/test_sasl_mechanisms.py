"""Choice of mechanism, GS2 flag and channel-binding type (XEP-0440, XEP-0474 rules)."""

import pytest

from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.channel_binding import StaticChannelBinding
from libervia.backend.xmpp.sasl.mechanisms import MechanismChoice, SASLPolicy, choose_mechanism

ALL_SCRAM = [
    "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS", "PLAIN",
]
TLS13 = StaticChannelBinding(
    {"tls-exporter": b"e" * 32, "tls-server-end-point": b"s" * 32}, "TLSv1.3"
)
TLS12 = StaticChannelBinding(
    {"tls-unique": b"u" * 12, "tls-server-end-point": b"s" * 32}, "TLSv1.2"
)


def choose(mechanisms, cb_types=None, binding=TLS13, policy=None, encrypted=True):
    return choose_mechanism(
        mechanisms,
        cb_types,
        encrypted=encrypted,
        channel_binding=binding,
        policy=policy or SASLPolicy(),
    )


def test_strongest_plus_mechanism_first():
    assert choose(ALL_SCRAM, binding=TLS12) == (
        MechanismChoice("SCRAM-SHA-512-PLUS", "p", "tls-unique")
    )
    assert choose(ALL_SCRAM, ["tls-exporter"]) == (
        MechanismChoice("SCRAM-SHA-512-PLUS", "p", "tls-exporter")
    )


@pytest.mark.parametrize(
    "offered,expected",
    [
        (["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"], "SCRAM-SHA-256"),
        (["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], "SCRAM-SHA-1-PLUS"),
        (["SCRAM-SHA-512", "SCRAM-SHA-256-PLUS"], "SCRAM-SHA-256-PLUS"),
        (["PLAIN", "SCRAM-SHA-1"], "SCRAM-SHA-1"),
        (["PLAIN", "DIGEST-MD5"], "PLAIN"),
    ],
)
def test_preference_order(offered, expected):
    assert choose(offered, binding=TLS12).mechanism == expected


def test_without_xep_0440_the_tls_version_default_is_used():
    assert choose(["SCRAM-SHA-256-PLUS"], binding=TLS13).cb_type == "tls-exporter"
    assert choose(["SCRAM-SHA-256-PLUS"], binding=TLS12).cb_type == "tls-unique"


def test_without_xep_0440_on_tls_1_3_plain_scram_is_preferred_to_a_guess():
    # ejabberd 23.01 offers -PLUS on TLS 1.3 but only knows tls-unique: guessing
    # tls-exporter would fail the login, and XEP-0474 can't be required from it
    assert choose(ALL_SCRAM, binding=TLS13) == MechanismChoice("SCRAM-SHA-512", "n")
    assert choose(["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], binding=TLS13) == (
        MechanismChoice("SCRAM-SHA-1", "n")
    )
    only_plus = SASLPolicy(allowed_mechanisms=("SCRAM-SHA-256-PLUS", "PLAIN"))
    assert choose(ALL_SCRAM, binding=TLS13, policy=only_plus) == (
        MechanismChoice("SCRAM-SHA-256-PLUS", "p", "tls-exporter")
    )


def test_xep_0440_types_are_honoured():
    choice = choose(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], ["tls-server-end-point"])
    assert choice == MechanismChoice("SCRAM-SHA-256-PLUS", "p", "tls-server-end-point")
    choice = choose(
        ["SCRAM-SHA-256-PLUS"], ["tls-server-end-point", "tls-exporter"], binding=TLS13
    )
    assert choice.cb_type == "tls-exporter"


def test_no_plus_offered_gives_the_y_flag_when_we_could_bind():
    assert choose(["SCRAM-SHA-256"]) == MechanismChoice("SCRAM-SHA-256", "y")


def test_n_flag_when_the_client_cannot_bind():
    assert choose(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], binding=None) == (
        MechanismChoice("SCRAM-SHA-256", "n")
    )
    no_plus = SASLPolicy(allowed_mechanisms=("SCRAM-SHA-256",))
    assert choose(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], policy=no_plus) == (
        MechanismChoice("SCRAM-SHA-256", "n")
    )
    no_binding_type = SASLPolicy(allowed_channel_bindings=())
    assert choose(["SCRAM-SHA-256"], policy=no_binding_type).gs2_flag == "n"


def test_channel_binding_types_without_plus_mechanism_abort():
    with pytest.raises(errors.DowngradeDetected):
        choose(["SCRAM-SHA-256"], ["tls-exporter"])


def test_no_mutual_channel_binding_continues_with_n_and_requires_ssdp():
    choice = choose(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], ["tls-made-up"])
    assert choice == MechanismChoice("SCRAM-SHA-256", "n", None, True)


def test_no_mutual_channel_binding_and_only_plus_offered_fails():
    with pytest.raises(errors.ChannelBindingError):
        choose(["SCRAM-SHA-256-PLUS", "PLAIN"], ["tls-made-up"])


def test_allowed_channel_bindings_restrict_the_choice():
    policy = SASLPolicy(allowed_channel_bindings=("tls-server-end-point",))
    assert choose(["SCRAM-SHA-256-PLUS"], policy=policy).cb_type == "tls-server-end-point"


def test_allowed_mechanisms_restrict_but_keep_strength_order():
    policy = SASLPolicy(allowed_mechanisms=("SCRAM-SHA-1", "SCRAM-SHA-256"))
    assert choose(ALL_SCRAM, policy=policy).mechanism == "SCRAM-SHA-256"
    with pytest.raises(errors.NoAcceptableMechanism):
        choose(["PLAIN", "SCRAM-SHA-512"], policy=policy)


def test_plain_is_refused_without_tls():
    with pytest.raises(errors.NoAcceptableMechanism) as info:
        choose(["PLAIN"], binding=None, encrypted=False)
    assert "TLS" in str(info.value)


def test_plain_is_refused_once_scram_was_seen():
    with pytest.raises(errors.NoAcceptableMechanism) as info:
        choose(["PLAIN"], policy=SASLPolicy(scram_seen=True))
    assert "SCRAM" in str(info.value)


def test_plain_over_tls_for_a_new_account():
    assert choose(["PLAIN"]) == MechanismChoice("PLAIN")


def test_nothing_acceptable():
    with pytest.raises(errors.NoAcceptableMechanism) as info:
        choose(["DIGEST-MD5", "X-\x07EVIL"])
    assert "\x07" not in str(info.value)


def test_policy_names_are_case_insensitive():
    policy = SASLPolicy(
        allowed_mechanisms=["scram-sha-256-plus"], allowed_channel_bindings=["TLS-Unique"]
    )
    assert policy.allowed_mechanisms == ("SCRAM-SHA-256-PLUS",)
    assert choose(["SCRAM-SHA-256-PLUS"], binding=TLS12, policy=policy).cb_type == "tls-unique"


def test_policy_rejects_unknown_names():
    with pytest.raises(ValueError):
        SASLPolicy(allowed_mechanisms=("SCRAM-MD5",))
    with pytest.raises(ValueError):
        SASLPolicy(allowed_channel_bindings=("tls-foo",))
    with pytest.raises(ValueError):
        SASLPolicy(min_iterations=0)
