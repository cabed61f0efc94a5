"""The bridge: the local API frontends use to drive the backend.

Frontends connect to a UNIX socket and speak JSON-RPC 2.0, one compact JSON document per
line (see ``doc/bridge-protocol.rst``).  The backend side is made of:

* :mod:`.errors`: how exceptions cross the bridge (JSON-RPC error codes and type names);
* :mod:`.protocol`: framing, validation of requests and the per-connection state;
* :mod:`.params`: the parameters of each method, read from its type hints when it is
  registered, against which every call is checked;
* :mod:`.server`: :class:`~.server.Bridge`, the registry of methods and signals reached by
  plugins as ``host.bridge``, and :class:`~.server.BridgeService`, which listens on the
  socket once the plugins are loaded.

A plugin exposes a method and a signal this way::

    host.bridge.register_method("profile_list", self.profile_list)
    host.bridge.register_signal("profile_connected", "a profile is connected")
    ...
    host.bridge.emit_signal("profile_connected", profile="alice")
"""

#: version of the wire protocol: "MAJOR.MINOR"; a frontend works with any backend of the
#: same MAJOR, MINOR only adds methods, signals or optional fields
PROTOCOL_VERSION = "1.0"
PROTOCOL_NAME = "libervia-bridge"
