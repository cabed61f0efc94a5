"""Logging through :mod:`twisted.logger`, with a level and secret redaction.

Modules get their logger with :func:`getLogger`.  Two things happen in the logger
itself, so that they hold whatever observers are in place (twistd's, the launcher's,
a test's):

* events below the configured level (:func:`set_level`) are dropped;
* *secrets* (passwords, keys) registered with :func:`register_secret` are replaced by
  ``***`` in the formatted text of an event, and in the message and traceback of its
  failure, before it is published.  The code never logs secrets on purpose; this is a
  second line of defence against a value slipping into a log line through an exception
  message or a dumped object.

Redaction must not hide ordinary text: secrets shorter than :data:`MIN_SECRET_LENGTH`
are ignored, and a secret is never blanked inside a *public* word
(:func:`register_public`: profile names, JIDs), so a password equal to a profile name
does not turn that name into ``***`` (which would also tell the password to whoever
reads the logs).  Profiles register their password and public words under an *owner*,
and :func:`forget_owner` drops them when the profile is deleted or its password
changes; a secret shared by two profiles stays until both forgot it.

:func:`start_logging` also wraps its observer with :func:`redacting_observer`, which
applies the same redaction to the events of Twisted's own loggers.
"""

import io
import sys
import threading
from collections.abc import Hashable
from typing import IO, Any

from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted import logger as tlog

_LEVEL_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error,
                LogLevel.critical]
_RANK = {level: i for i, level in enumerate(_LEVEL_ORDER)}

_min_rank = _RANK[LogLevel.info]
#: secret -> its owners (``None``: registered without an owner)
_secrets: dict[str, set[Hashable | None]] = {}
#: public word (profile name, JID) -> its owners
_public: dict[str, set[Hashable]] = {}
#: secret -> the public words containing it (rebuilt on every change)
_shields: dict[str, tuple[str, ...]] = {}
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


def _as_text(secret: str | bytes | None) -> str | None:
    if isinstance(secret, bytes):
        try:
            return secret.decode()
        except UnicodeDecodeError:
            return None  # binary keys are never formatted as text
    return secret


def register_secret(secret: str | bytes | None, owner: Hashable | None = None) -> None:
    """Make sure ``secret`` never appears in a log line of the backend.

    :param owner: who uses the secret (a profile: see
        :func:`libervia.backend.xmpp.profiles.secret_owner`); the secret is redacted
        until every owner that registered it forgot it (:func:`forget_owner`).  Without
        an owner, the secret stays until :func:`unregister_secret` removes it.

    Secrets shorter than :data:`MIN_SECRET_LENGTH` are ignored, and so is any
    occurrence of a secret inside a public word (:func:`register_public`): blanking
    them would mangle ordinary text, and show the secret to whoever knows the word.
    """
    text = _as_text(secret)
    if not text or len(text) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        owners = _secrets.setdefault(text, set())
        if owner not in owners:
            owners.add(owner)
            _update_shields()


def unregister_secret(secret: str | bytes | None, owner: Hashable | None = None) -> None:
    """Stop redacting ``secret``: for ``owner`` only, or for everyone (no owner)."""
    text = _as_text(secret)
    if text is None:
        return
    with _secrets_lock:
        owners = _secrets.get(text)
        if owners is None:
            return
        if owner is None:
            owners.clear()
        else:
            owners.discard(owner)
        if not owners:
            del _secrets[text]
            _update_shields()


def register_public(word: str, owner: Hashable) -> None:
    """Declare ``word`` (a profile name, a JID) public: never redacted, even if a
    secret equals it or is part of it."""
    if not word:
        return
    with _secrets_lock:
        owners = _public.setdefault(word, set())
        if owner not in owners:
            owners.add(owner)
            _update_shields()


def forget_owner(owner: Hashable, *, secrets: bool = True, public: bool = True) -> None:
    """Drop what ``owner`` registered: its secrets (a secret another owner registered
    too stays) and its public words.

    A deleted profile forgets both; a profile whose password changed forgets its
    secrets only, one whose JID changed its public words only.
    """
    tables = [table for table, wanted in ((_secrets, secrets), (_public, public))
              if wanted]
    with _secrets_lock:
        for table in tables:
            for key in [k for k, owners in table.items() if owner in owners]:
                table[key].discard(owner)
                if not table[key]:
                    del table[key]
        _update_shields()


def _update_shields() -> None:
    """Public words holding a secret: their occurrences are not redacted (lock held)."""
    global _shields
    _shields = {
        secret: tuple(word for word in _public if secret in word) for secret in _secrets
    }


def is_secret(text: str) -> bool:
    """Whether ``text`` is a registered secret (redacted in the logs)."""
    with _secrets_lock:
        return text in _secrets


def redact(text: str) -> str:
    """Replace every registered secret found in ``text`` by ``***``.

    Occurrences inside a public word containing the secret are left alone; overlapping
    occurrences of several secrets give one ``***``.
    """
    with _secrets_lock:
        shields = _shields
    spans: list[tuple[int, int]] = []
    for secret, words in shields.items():
        start = text.find(secret)
        if start < 0:
            continue
        shielded = _occurrences(text, words)
        while start >= 0:
            end = start + len(secret)
            if not any(s <= start and end <= e for s, e in shielded):
                spans.append((start, end))
            start = text.find(secret, start + 1)
    if not spans:
        return text
    pieces = []
    position = 0
    for start, end in sorted(spans):
        if end <= position:
            continue
        if start >= position:
            pieces.append(text[position:start])
            pieces.append(REDACTED)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _occurrences(text: str, words: tuple[str, ...]) -> list[tuple[int, int]]:
    found = []
    for word in words:
        start = text.find(word)
        while start >= 0:
            found.append((start, start + len(word)))
            start = text.find(word, start + 1)
    return found


class _RedactedFailure(Failure):
    """A copy of a failure whose message and traceback texts are redacted."""

    def getErrorMessage(self) -> str:  # noqa: N802 (Twisted API)
        return redact(super().getErrorMessage())

    def printTraceback(self, file: Any = None, elideFrameworkCode: Any = False,  # noqa: N802, N803
                       detail: str = "default") -> None:
        buffer = io.StringIO()
        super().printTraceback(buffer, elideFrameworkCode, detail)
        if file is None:
            from twisted.python import log as legacy_log

            file = legacy_log.logerr
        file.write(redact(buffer.getvalue()))


def redact_failure(failure: Failure) -> Failure:
    """``failure``, or a copy of it whose texts (message, traceback) are redacted.

    The copy keeps the type, value and frames: observers still ``check`` and ``trap``
    it; only what it prints changes.
    """
    if not _secrets or isinstance(failure, _RedactedFailure):
        return failure
    try:
        text = failure.getTraceback()
    except Exception:  # noqa: BLE001 - a failure that can't print itself leaks nothing
        return failure
    if redact(text) == text:
        return failure
    clean = _RedactedFailure.__new__(_RedactedFailure)
    clean.__dict__.update(failure.__dict__)
    return clean


class Logger(tlog.Logger):
    """A :class:`twisted.logger.Logger` honouring the level and the secrets."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if _RANK.get(level, len(_RANK)) < _min_rank:
            return
        if _secrets:
            failure = kwargs.get("log_failure")
            if failure is not None:
                failure = redact_failure(failure)
                kwargs["log_failure"] = failure
            if format is not None:
                text = formatEvent({"log_format": format, **kwargs})
                clean = redact(text)
                if clean != text:
                    kwargs = {"log_failure": failure} if failure is not None else {}
                    format = clean.replace("{", "{{").replace("}", "}}")
        super().emit(level, format, **kwargs)


def redacting_observer(observer: tlog.ILogObserver) -> tlog.ILogObserver:
    """Wrap ``observer`` so that events of any logger (Twisted's own included) reach it
    with their text and failure redacted."""

    @implementer(tlog.ILogObserver)
    def observe(event: dict) -> None:
        if _secrets:
            event = dict(event)
            failure = event.get("log_failure")
            if failure is not None:
                event["log_failure"] = redact_failure(failure)
            if event.get("log_format") is not None:
                try:
                    text = formatEvent(event)
                except Exception:  # noqa: BLE001 - formatEvent does not raise; belt
                    text = ""
                clean = redact(text)
                if clean != text:
                    event = {key: value for key, value in event.items()
                             if key.startswith("log_") and key != "log_format"}
                    event["log_format"] = clean.replace("{", "{{").replace("}", "}}")
        observer(event)

    return observe


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
    observer = redacting_observer(tlog.textFileLogObserver(output or sys.stdout))
    tlog.globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
