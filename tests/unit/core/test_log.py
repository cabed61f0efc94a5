"""Log level filtering and secret redaction."""

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

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


def test_a_secret_equal_to_a_public_word_never_blanks_it(events):
    log.register_public("bobby", owner="profile bobby")
    log.register_secret("bobby", owner="profile alice")  # alice's password is "bobby"
    log.getLogger("test.log").info("profile {name} connected", name="bobby")
    assert texts(events) == ["profile bobby connected"]


def test_a_secret_inside_a_jid_is_kept_there_and_redacted_elsewhere():
    log.register_public("alice@example.org", owner="profile alice")
    log.register_secret("alice@exa", owner="profile carol")
    assert log.redact("jid alice@example.org") == "jid alice@example.org"
    assert log.redact("typed alice@exam by mistake") == "typed ***m by mistake"


def test_overlapping_secrets_give_one_mark():
    log.register_secret("horse battery")
    log.register_secret("battery staple")
    assert log.redact("correct horse battery staple!") == "correct ***!"


def test_a_secret_stays_until_every_owner_forgot_it():
    log.register_secret("shared password", owner="profile alice")
    log.register_secret("shared password", owner="profile bob")
    log.forget_owner("profile alice")
    assert log.redact("shared password") == "***"
    log.forget_owner("profile bob")
    assert log.redact("shared password") == "shared password"
    assert not log.is_secret("shared password")


def test_forgetting_the_secrets_of_an_owner_keeps_its_public_words():
    log.register_public("alice", owner="profile alice")
    log.register_secret("old password", owner="profile alice")
    log.register_secret("alice-pw")
    log.forget_owner("profile alice", public=False)
    assert log.redact("old password") == "old password"
    # "alice" is still public: "alice-pw" is blanked, not the name inside it
    assert log.redact("alice alice-pw") == "alice ***"


def _logged_failure(logger, message):
    try:
        raise ValueError(message)
    except ValueError:
        logger.failure("login failed")


def test_the_traceback_of_a_logged_failure_is_redacted(events):
    log.register_secret("hunter22")
    _logged_failure(log.getLogger("test.log"), "bad password hunter22")
    event = next(e for e in events if e.get("log_namespace") == "test.log")
    failure = event["log_failure"]
    traceback = failure.getTraceback()
    assert "ValueError: bad password ***" in traceback
    assert "hunter22" not in traceback + failure.getBriefTraceback() + repr(failure)
    assert failure.getErrorMessage() == "bad password ***"
    # still the failure observers can check and trap
    assert failure.check(ValueError) and failure.type is ValueError


def test_a_failure_without_a_secret_is_passed_unchanged(events):
    log.register_secret("hunter22")
    try:
        raise ValueError("nothing secret")
    except ValueError:
        original = Failure()
    log.getLogger("test.log").failure("oops", original)
    event = next(e for e in events if e.get("log_namespace") == "test.log")
    assert event["log_failure"] is original


def test_the_observer_of_start_logging_redacts_twisted_s_own_loggers():
    seen = []
    observer = log.redacting_observer(seen.append)
    log.register_secret("hunter22")
    publisher = LogPublisher(observer)
    logger = Logger(namespace="twisted.other", observer=publisher)
    logger.info("sent {data}", data="password=hunter22")
    try:
        raise RuntimeError("hunter22 rejected")
    except RuntimeError:
        logger.failure("unhandled error")
    assert formatEvent(seen[0]) == "sent password=***"
    assert "hunter22" not in repr(seen[0])
    assert "RuntimeError: *** rejected" in seen[1]["log_failure"].getTraceback()
    assert "hunter22" not in seen[1]["log_failure"].getTraceback()
