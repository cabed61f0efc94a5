"""Fixtures of the SASL tests.

The helpers live in :mod:`sasl_support` (a module with a name of its own: several
folders have a ``conftest`` module, so ``from conftest import`` would depend on which
one was imported first); importing the fixtures here makes pytest find them.
"""

from tests.unit.xmpp.sasl.sasl_support import (  # noqa: F401  (fixtures)
    _forget_test_secrets,
    debug_logs,
    ec_certificate,
    rsa_certificate,
    tls_pair_factory,
)
