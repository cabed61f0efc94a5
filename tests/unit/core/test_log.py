"""Log level filtering and secret redaction."""

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from libervia.backend.core import log


@pytest.fixture
def events():
    captured = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)


def texts(events, namespace="test.log"):
    return [formatEvent(e) for e in events if e.get("log_namespace") == namespace]


def test_events_below_the_level_are_dropped(events):
    logger = log.getLogger("test.log")
    log.set_level("warning")
    logger.info("hidden")
    logger.warn("shown {n}", n=1)
    logger.error("shown too")
    assert texts(events) == ["shown 1", "shown too"]
    assert log.get_level() is LogLevel.warn


def test_registered_secrets_never_reach_the_observers(events):
    logger = log.getLogger("test.log")
    log.set_level("debug")
    log.register_secret("correct horse battery")
    log.register_secret(b"s3cr3t-key")
    logger.debug("login with {password}", password="correct horse battery")
    logger.info("key={key} and {other}", key=b"s3cr3t-key".decode(), other="{braces}")
    logger.info("nothing secret {x}", x=42)
    assert texts(events) == ["login with ***", "key=*** and {braces}", "nothing secret 42"]
    leaked = [e for e in events if "correct horse" in repr(e) or "s3cr3t" in repr(e)]
    assert leaked == []


def test_secret_in_a_failure_message_is_redacted(events):
    logger = log.getLogger("test.log")
    log.register_secret("hunter22")
    try:
        raise ValueError("bad password hunter22")
    except ValueError:
        logger.failure("login failed: {why}", why="bad password hunter22")
    assert texts(events)[0].startswith("login failed: bad password ***")


def test_short_secrets_are_not_redacted(events):
    log.register_secret("ab")
    log.getLogger("test.log").info("about abc")
    assert texts(events) == ["about abc"]


def test_unregister_secret(events):
    log.register_secret("temporary")
    log.unregister_secret("temporary")
    log.getLogger("test.log").info("temporary")
    assert texts(events) == ["temporary"]
