"""Trigger manager: ordering, short-circuits, SkipOtherTriggers, async callbacks."""

import pytest
from twisted.internet import defer, task

from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import SkipOtherTriggers, TriggerError
from libervia.backend.core.triggers import TriggerManager


def run(coro):
    """Run a coroutine that completes without the reactor; return its result."""
    d = defer.ensureDeferred(coro)
    results = []
    d.addBoth(results.append)
    assert results, "coroutine did not complete synchronously"
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


@pytest.fixture
def trigger():
    return TriggerManager()


def recorder(calls, name, answer=True):
    def callback(*args, **kwargs):
        calls.append((name, args, kwargs))
        return answer

    callback.__name__ = f"cb_{name}"
    return callback


def test_higher_priority_runs_first_and_ties_keep_registration_order(trigger):
    calls = []
    trigger.add("p", recorder(calls, "low"), priority=-5)
    trigger.add("p", recorder(calls, "mid1"), priority=0)
    trigger.add("p", recorder(calls, "high"), priority=10)
    trigger.add("p", recorder(calls, "mid2"))
    assert trigger.point("p", 1, key="v") is True
    assert [c[0] for c in calls] == ["high", "mid1", "mid2", "low"]
    assert all(c[1:] == ((1,), {"key": "v"}) for c in calls)


def test_point_without_callbacks_is_true(trigger):
    assert trigger.point("nothing") is True
    assert trigger.return_point("nothing") == (True, None)


def test_false_stops_the_chain(trigger):
    calls = []
    trigger.add("p", recorder(calls, "first"), priority=2)
    trigger.add("p", recorder(calls, "stopper", answer=False), priority=1)
    trigger.add("p", recorder(calls, "never"), priority=0)
    assert trigger.point("p") is False
    assert [c[0] for c in calls] == ["first", "stopper"]


def test_skip_other_triggers_stops_successfully(trigger):
    calls = []

    def skipper():
        calls.append("skipper")
        raise SkipOtherTriggers

    trigger.add("p", skipper, priority=5)
    trigger.add("p", recorder(calls, "never", answer=False))
    assert trigger.point("p") is True
    assert calls == ["skipper"]


def test_return_point_short_circuits_with_first_value(trigger):
    calls = []
    trigger.add("r", lambda: calls.append("a") or (True, None), priority=3)
    trigger.add("r", lambda: calls.append("b") or (False, "cached"), priority=2)
    trigger.add("r", lambda: calls.append("c") or (False, "other"), priority=1)
    assert trigger.return_point("r") == (False, "cached")
    assert calls == ["a", "b"]


def test_return_point_all_continue(trigger):
    trigger.add("r", lambda x: (True, x * 2))
    assert trigger.return_point("r", 21) == (True, None)


def test_return_point_skip_other_triggers(trigger):
    def skipper():
        raise SkipOtherTriggers

    trigger.add("r", skipper, priority=1)
    trigger.add("r", lambda: (False, "never"))
    assert trigger.return_point("r") == (True, None)


def test_return_point_rejects_non_tuple(trigger):
    trigger.add("r", lambda: True)
    with pytest.raises(TriggerError, match="tuple"):
        trigger.return_point("r")


def test_errors_propagate_to_the_caller(trigger):
    def broken():
        raise ValueError("boom")

    trigger.add("p", broken)
    with pytest.raises(ValueError, match="boom"):
        trigger.point("p")


def test_sync_point_refuses_async_callback(trigger):
    async def coroutine_cb():
        return True

    trigger.add("p", coroutine_cb)
    with pytest.raises(TriggerError, match="async_point"):
        trigger.point("p")
    trigger.remove("p", coroutine_cb)
    trigger.add("p", lambda: defer.succeed(True))
    with pytest.raises(TriggerError, match="asynchronous"):
        trigger.point("p")


def test_priority_bounds_and_duplicates(trigger):
    cb = recorder([], "x")
    with pytest.raises(TriggerError, match="out of bounds"):
        trigger.add("p", cb, priority=C.TRIGGER_PRIORITY_MAX + 1)
    trigger.add("p", cb, priority=C.TRIGGER_PRIORITY_MAX)
    with pytest.raises(TriggerError, match="already registered"):
        trigger.add("p", cb)
    with pytest.raises(TriggerError, match="callable"):
        trigger.add("p", "not callable")


def test_remove(trigger):
    calls = []
    a, b = recorder(calls, "a"), recorder(calls, "b")
    trigger.add("p", a)
    trigger.add("p", b)
    trigger.remove("p", a)
    trigger.point("p")
    assert [c[0] for c in calls] == ["b"]
    trigger.remove("p", b)
    assert not trigger.has_point("p")
    with pytest.raises(KeyError):
        trigger.remove("p", b)


def test_callback_removing_itself_during_the_chain(trigger):
    calls = []

    def once():
        calls.append("once")
        trigger.remove("p", once)
        return True

    trigger.add("p", once, priority=1)
    trigger.add("p", recorder(calls, "other"))
    assert trigger.point("p") is True
    assert trigger.point("p") is True
    assert [c if isinstance(c, str) else c[0] for c in calls] == ["once", "other", "other"]


def test_add_with_check_ignores_missing_plugin(trigger):
    trigger.add_with_check("p", None, recorder([], "x"))
    assert not trigger.has_point("p")
    trigger.add_with_check("p", object(), recorder([], "y"))
    assert trigger.has_point("p")


# asynchronous points


def test_async_point_accepts_plain_coroutine_and_deferred_callbacks(trigger):
    calls = []

    def plain(x):
        calls.append(("plain", x))
        return True

    async def coroutine(x):
        calls.append(("coroutine", x))
        return True

    def deferred(x):
        calls.append(("deferred", x))
        return defer.succeed(True)

    trigger.add("p", plain, priority=3)
    trigger.add("p", coroutine, priority=2)
    trigger.add("p", deferred, priority=1)
    assert run(trigger.async_point("p", 7)) is True
    assert calls == [("plain", 7), ("coroutine", 7), ("deferred", 7)]


@pytest.mark.parametrize("kind", ["plain", "coroutine", "deferred"])
def test_async_point_stops_on_false_of_each_kind(trigger, kind):
    calls = []

    def plain():
        return False

    async def coroutine():
        return False

    def deferred():
        return defer.succeed(False)

    trigger.add("p", {"plain": plain, "coroutine": coroutine, "deferred": deferred}[kind],
                priority=1)
    trigger.add("p", recorder(calls, "never"))
    assert run(trigger.async_point("p")) is False
    assert calls == []


@pytest.mark.parametrize("kind", ["plain", "coroutine", "deferred"])
def test_async_skip_other_triggers_of_each_kind(trigger, kind):
    calls = []

    def plain():
        raise SkipOtherTriggers

    async def coroutine():
        raise SkipOtherTriggers

    def deferred():
        return defer.fail(SkipOtherTriggers())

    trigger.add("p", {"plain": plain, "coroutine": coroutine, "deferred": deferred}[kind],
                priority=1)
    trigger.add("p", recorder(calls, "never", answer=False))
    assert run(trigger.async_point("p")) is True
    assert run(trigger.async_return_point("p")) == (True, None)
    assert calls == []


def test_async_return_point_short_circuits_with_value(trigger):
    calls = []

    async def first(node):
        calls.append("first")
        return True, None

    def second(node):
        calls.append("second")
        return defer.succeed((False, f"items of {node}"))

    trigger.add("r", first, priority=2)
    trigger.add("r", second, priority=1)
    trigger.add("r", lambda node: calls.append("never") or (False, None))
    assert run(trigger.async_return_point("r", "blog")) == (False, "items of blog")
    assert calls == ["first", "second"]


def test_async_point_waits_for_a_slow_deferred(trigger):
    """A callback answering later keeps the chain waiting, in order."""
    clock = task.Clock()
    calls = []

    def slow():
        calls.append("slow started")
        return task.deferLater(clock, 5, lambda: calls.append("slow done") or True)

    trigger.add("p", slow, priority=1)
    trigger.add("p", recorder(calls, "next"))
    d = defer.ensureDeferred(trigger.async_point("p"))
    results = []
    d.addCallback(results.append)
    assert calls == ["slow started"] and results == []
    clock.advance(5)
    assert [c if isinstance(c, str) else c[0] for c in calls] == [
        "slow started", "slow done", "next"
    ]
    assert results == [True]


def test_async_point_propagates_errors(trigger):
    async def broken():
        raise RuntimeError("async boom")

    trigger.add("p", broken)
    with pytest.raises(RuntimeError, match="async boom"):
        run(trigger.async_point("p"))
