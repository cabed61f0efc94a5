"""SASL authentication: SCRAM (with channel binding) and PLAIN for the XMPP client.

* :mod:`.scram`: the SCRAM client state machine and the derived-key cache (no I/O);
* :mod:`.channel_binding`: channel-binding data read from a pyOpenSSL connection;
* :mod:`.mechanisms`: the profile policy and the choice of mechanism;
* :mod:`.initializer`: the Twisted/Wokkel stream initializer using all of them;
* :mod:`.errors`: the exceptions, with the ``retry`` hint for the reconnection logic.

See ``doc/developer/sasl.rst`` for the design.
"""
