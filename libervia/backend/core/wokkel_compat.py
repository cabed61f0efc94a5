"""Make Wokkel 18.0.0 importable on current Twisted.

Wokkel 18.0.0 is the last release of Wokkel, and it still relies on two things that
current Twisted releases removed:

* ``twisted.python.compat._PY3``, a flag telling Python 2 and 3 apart
  (``wokkel.data_form`` imports it);
* the module ``twisted.python.constants``, which moved out of Twisted into the
  ``constantly`` package with the same API (``wokkel.muc`` imports it).

:func:`apply` restores both, without touching anything that exists already, so it is
harmless on a Twisted version that still has them.  It must run before the first Wokkel
import: importing :mod:`libervia.backend` applies it, and every module that imports
Wokkel lives below that package.
"""

import sys

_applied = False


def apply() -> None:
    """Install the compatibility shims (idempotent)."""
    global _applied
    if _applied:
        return
    from twisted.python import compat

    if not hasattr(compat, "_PY3"):
        compat._PY3 = True  # type: ignore[attr-defined]

    if "twisted.python.constants" not in sys.modules:
        try:
            import twisted.python.constants  # noqa: F401
        except ImportError:
            import constantly

            sys.modules["twisted.python.constants"] = constantly
            import twisted.python

            twisted.python.constants = constantly  # type: ignore[attr-defined]
    _applied = True
