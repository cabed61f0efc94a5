"""Logging through :mod:`twisted.logger`, with a level and secret redaction.

Modules get their logger with :func:`getLogger`.  Two things happen in the logger
itself, so that they hold whatever observers are in place (twistd's, the launcher's,
a test's):

* events below the configured level (:func:`set_level`) are dropped;
* *secrets* (passwords, keys) registered with :func:`register_secret` are replaced by
  ``***`` in the formatted text of an event before it is published.  The code never
  logs secrets on purpose; this is a second line of defence against a value slipping
  into a log line through an exception message or a dumped object.
"""

import sys
import threading
from typing import IO, Any

from twisted.logger import LogLevel, formatEvent

from twisted import logger as tlog

_LEVEL_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error,
                LogLevel.critical]
_RANK = {level: i for i, level in enumerate(_LEVEL_ORDER)}

_min_rank = _RANK[LogLevel.info]
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
REDACTED = "***"
#: secrets shorter than this are not redacted: they would mangle ordinary words
MIN_SECRET_LENGTH = 4


def level_from_name(name: str) -> LogLevel:
    name = name.strip().lower()
    if name == "warning":
        name = "warn"
    return LogLevel.levelWithName(name)


def set_level(level: str | LogLevel) -> None:
    """Set the lowest level of the events the backend's loggers emit."""
    global _min_rank
    if isinstance(level, str):
        level = level_from_name(level)
    _min_rank = _RANK[level]


def get_level() -> LogLevel:
    return _LEVEL_ORDER[_min_rank]


def register_secret(secret: str | bytes | None) -> None:
    """Make sure ``secret`` never appears in a log line of the backend."""
    if not secret:
        return
    if isinstance(secret, bytes):
        try:
            secret = secret.decode()
        except UnicodeDecodeError:
            return  # binary keys are never formatted as text
    if len(secret) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        _secrets.add(secret)


def unregister_secret(secret: str | bytes | None) -> None:
    if isinstance(secret, bytes):
        try:
            secret = secret.decode()
        except UnicodeDecodeError:
            return
    with _secrets_lock:
        _secrets.discard(secret)


def redact(text: str) -> str:
    """Replace every registered secret found in ``text``."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class Logger(tlog.Logger):
    """A :class:`twisted.logger.Logger` honouring the level and the secrets."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if _RANK.get(level, len(_RANK)) < _min_rank:
            return
        if _secrets and format is not None:
            text = formatEvent({"log_format": format, **kwargs})
            clean = redact(text)
            if clean != text:
                failure = kwargs.get("log_failure")
                kwargs = {"log_failure": failure} if failure is not None else {}
                format = clean.replace("{", "{{").replace("}", "}}")
        super().emit(level, format, **kwargs)


def getLogger(namespace: str | None = None) -> Logger:  # noqa: N802 (Twisted style)
    """Logger for a module: ``log = getLogger(__name__)``."""
    return Logger(namespace=namespace)


def line_buffer_std_streams() -> None:
    """Write log lines to stdout/stderr as they come, even through a pipe.

    Under a service manager the standard streams are pipes, hence block-buffered; twistd
    ends by re-raising the signal that stopped it, which would drop the buffer, and the
    last lines (those telling the shut-down went well) with it.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)
            except (ValueError, OSError):
                pass


def start_logging(level: str | LogLevel = "info", output: IO[str] | None = None) -> None:
    """Send every log event to ``output`` (stdout by default) as text lines.

    Used by the ``libervia-backend`` launcher; under twistd, twistd sets the observers.
    """
    set_level(level)
    line_buffer_std_streams()
    observer = tlog.textFileLogObserver(output or sys.stdout)
    tlog.globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
