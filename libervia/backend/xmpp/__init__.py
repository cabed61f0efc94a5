"""The XMPP connection stack: profiles, their connections, SASL.

* :mod:`~libervia.backend.xmpp.profiles`: :class:`~.profiles.ProfileManager`
  (``host.profiles``), the XMPP accounts and their stored settings;
* :mod:`~libervia.backend.xmpp.client`: :class:`~.client.XMPPClient`, the connection of
  one profile (TLS, SASL, reconnection);
* :mod:`~libervia.backend.xmpp.clients`: :class:`~.clients.ClientManager`
  (``host.clients``), which connects profiles and calls the plugins' profile hooks;
* :mod:`~libervia.backend.xmpp.sasl`: SASL authentication (SCRAM with channel binding).

It depends on :mod:`libervia.backend.core` and :mod:`libervia.backend.memory` only; the
host it is given is seen through :mod:`libervia.backend.core.interfaces`.
"""
