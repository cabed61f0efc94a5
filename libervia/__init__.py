"""Libervia: an XMPP client backend and its frontends."""
