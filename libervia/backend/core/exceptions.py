"""Exceptions shared by the whole backend.

Every exception a user can meet carries a message that says what went wrong and, where
possible, what to do about it.
"""


class BackendError(Exception):
    """Base class of the backend's own errors."""


class ConfigError(BackendError):
    """The configuration is invalid: the message names the file, section and key."""


class StartupError(BackendError):
    """The backend can't start; the message says why and what to do."""


class SkipOtherTriggers(Exception):
    """Raised by a trigger callback to stop the chain successfully.

    The remaining (lower priority) callbacks of the point are not called, and the point
    behaves as if every callback had agreed (``point`` returns ``True``, a return point
    returns ``(True, None)``).
    """


class TriggerError(BackendError):
    """A trigger callback was misused (for instance asynchronous in a synchronous point)."""


class PluginError(BackendError):
    """A plugin can't be loaded: invalid ``PLUGIN_INFO``, duplicate name, cycle..."""


class NotFound(BackendError):
    """The requested object does not exist."""


class ProfileNotFound(NotFound):
    """There is no profile of this name."""

    def __init__(self, name: str) -> None:
        self.name = name
        # a name longer than any profile's is no one's: the message need not hold it all
        shown = repr(name) if len(name) <= 64 else f"{name[:64]!r}..."
        super().__init__(f"there is no profile named {shown}")


class NotConnected(BackendError):
    """The profile is not connected (disconnected, reconnecting, failed), or lost its
    connection before the answer; the message says which."""


class ConflictError(BackendError):
    """The object to create already exists."""
