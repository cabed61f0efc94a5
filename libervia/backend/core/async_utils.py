"""Helpers to call code that may be plain, a coroutine function, or return a Deferred."""

import inspect
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")


def maybe_async_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred:
    """Call ``func`` and always return a Deferred of its result.

    ``func`` may return a plain value, a Deferred or a coroutine; an exception raised
    synchronously becomes a failed Deferred.
    """
    try:
        result = func(*args, **kwargs)
    except BaseException:
        return defer.fail()
    return as_deferred(result)


def as_deferred(result: Any) -> defer.Deferred:
    """Wrap a plain value, a Deferred or a coroutine/awaitable into a Deferred."""
    if isinstance(result, defer.Deferred):
        return result
    if inspect.isawaitable(result):
        return defer.ensureDeferred(_await(result))
    return defer.succeed(result)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def is_async_result(result: Any) -> bool:
    """Tell whether ``result`` is something that still has to be waited for."""
    return isinstance(result, defer.Deferred) or inspect.isawaitable(result)


class SharedCalls:
    """Calls made while an identical one runs wait for it and share its outcome.

    ``await shared.run(key, func)`` calls ``func()`` (a coroutine function) unless a
    call of the same ``key`` is running: then it waits for that one, and gets its
    result or its exception.  A service asked the same question twice at once is asked
    once.
    """

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[defer.Deferred]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._waiting

    async def run(self, key: Hashable, func: Callable[[], Awaitable[T]]) -> T:
        waiters = self._waiting.get(key)
        if waiters is not None:
            waiter: defer.Deferred = defer.Deferred()
            waiters.append(waiter)
            return await waiter
        self._waiting[key] = waiters = []
        try:
            result = await func()
        except BaseException:
            failure = Failure()
            del self._waiting[key]
            for waiter in waiters:
                waiter.errback(failure)
            raise
        del self._waiting[key]
        for waiter in waiters:
            waiter.callback(result)
        return result
