"""Libervia backend: a Twisted service holding XMPP profiles, plugins and storage.

Importing this package applies the Wokkel compatibility patch, so that every module of
the backend can import Wokkel safely (see :mod:`libervia.backend.core.wokkel_compat`).
"""

from importlib import metadata as _metadata

from libervia.backend.core import wokkel_compat as _wokkel_compat

_wokkel_compat.apply()

try:
    __version__ = _metadata.version("libervia-backend")
except _metadata.PackageNotFoundError:  # running from a source tree not installed
    __version__ = "0+unknown"
