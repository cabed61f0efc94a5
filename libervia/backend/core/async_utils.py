"""Helpers to call code that may be plain, a coroutine function, or return a Deferred."""

import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet import defer


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
