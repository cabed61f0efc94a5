"""Trigger manager: the way plugins hook into each other.

A *point* is a named place in the code where callbacks registered by plugins run, by
decreasing priority.  Two kinds of points exist:

* a plain point (:meth:`TriggerManager.point`): each callback returns a boolean; the first
  ``False`` stops the chain and the point answers ``False`` (the caller then usually
  skips its normal processing);
* a return point (:meth:`TriggerManager.return_point`): each callback returns a
  ``(continue, value)`` tuple; the first ``(False, value)`` stops the chain and
  ``(False, value)`` is answered, letting a plugin answer in place of the caller (this
  is how the pubsub cache answers get-items requests from the database).

A callback raising :class:`~libervia.backend.core.exceptions.SkipOtherTriggers` stops
the chain successfully: the point answers ``True`` (or ``(True, None)``).

The asynchronous forms (:meth:`TriggerManager.async_point` and
:meth:`TriggerManager.async_return_point`) accept plain callbacks, coroutine functions
and callbacks returning a Deferred.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from libervia.backend.core.async_utils import is_async_result, maybe_async_call
from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import SkipOtherTriggers, TriggerError
from libervia.backend.core.log import getLogger

log = getLogger(__name__)

_sequence = count()


@dataclass(order=True, frozen=True)
class _Trigger:
    # sort key: higher priority first, then registration order (stable)
    sort_key: tuple[int, int]
    callback: Callable[..., Any] = field(compare=False)

    @property
    def priority(self) -> int:
        return -self.sort_key[0]


class TriggerManager:
    """Registry of trigger callbacks, reached by plugins as ``host.trigger``."""

    def __init__(self) -> None:
        self._points: dict[str, list[_Trigger]] = {}

    def add(self, point_name: str, callback: Callable[..., Any], priority: int = 0) -> None:
        """Register ``callback`` on ``point_name``.

        :param point_name: name of the point, e.g. ``"XEP-0060_get_items"``
        :param callback: called with the point's arguments; see the module documentation
            for what it must return
        :param priority: callbacks with a higher priority run first; callbacks of equal
            priority run in registration order. It must stay within
            ``C.TRIGGER_PRIORITY_MIN`` and ``C.TRIGGER_PRIORITY_MAX``.
        :raise TriggerError: priority out of bounds, or callback already registered on
            this point
        """
        if not callable(callback):
            raise TriggerError(f"trigger callback for {point_name!r} is not callable")
        if not C.TRIGGER_PRIORITY_MIN <= priority <= C.TRIGGER_PRIORITY_MAX:
            raise TriggerError(
                f"trigger priority {priority} for {point_name!r} is out of bounds "
                f"[{C.TRIGGER_PRIORITY_MIN}, {C.TRIGGER_PRIORITY_MAX}]"
            )
        triggers = self._points.setdefault(point_name, [])
        if any(t.callback == callback for t in triggers):
            raise TriggerError(f"{callback!r} is already registered on {point_name!r}")
        triggers.append(_Trigger((-priority, next(_sequence)), callback))
        triggers.sort()

    def add_with_check(
        self,
        point_name: str,
        plugin: object | None,
        callback: Callable[..., Any],
        priority: int = 0,
    ) -> None:
        """Like :meth:`add`, but only if ``plugin`` is loaded (not ``None``)."""
        if plugin is not None:
            self.add(point_name, callback, priority)

    def remove(self, point_name: str, callback: Callable[..., Any]) -> None:
        """Unregister ``callback`` from ``point_name``.

        :raise KeyError: the callback is not registered on this point
        """
        triggers = self._points.get(point_name, [])
        for trigger in triggers:
            if trigger.callback == callback:
                triggers.remove(trigger)
                if not triggers:
                    del self._points[point_name]
                return
        raise KeyError(f"{callback!r} is not registered on trigger point {point_name!r}")

    def callbacks(self, point_name: str) -> list[Callable[..., Any]]:
        """Return the callbacks of a point, in the order they run."""
        return [t.callback for t in self._points.get(point_name, [])]

    def has_point(self, point_name: str) -> bool:
        """Tell whether at least one callback is registered on ``point_name``."""
        return point_name in self._points

    def _snapshot(self, point_name: str) -> list[_Trigger]:
        # a callback may add or remove triggers while the chain runs: iterate on a copy
        return list(self._points.get(point_name, ()))

    @staticmethod
    def _check_sync(point_name: str, trigger: _Trigger, result: Any) -> None:
        if is_async_result(result):
            if hasattr(result, "close"):  # avoid "coroutine was never awaited"
                result.close()
            raise TriggerError(
                f"trigger {trigger.callback!r} on point {point_name!r} is asynchronous; "
                "the point must be called with async_point/async_return_point"
            )

    @staticmethod
    def _check_return_value(point_name: str, trigger: _Trigger, result: Any) -> tuple:
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TriggerError(
                f"trigger {trigger.callback!r} on return point {point_name!r} must return "
                f"a (continue, value) tuple, not {result!r}"
            )
        return result

    def point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        """Run the synchronous callbacks of ``point_name``.

        :return: ``False`` if a callback returned ``False`` (the chain stopped there),
            ``True`` otherwise
        """
        for trigger in self._snapshot(point_name):
            try:
                result = trigger.callback(*args, **kwargs)
            except SkipOtherTriggers:
                return True
            self._check_sync(point_name, trigger, result)
            if not result:
                return False
        return True

    def return_point(
        self, point_name: str, *args: Any, **kwargs: Any
    ) -> tuple[bool, Any]:
        """Run the synchronous callbacks of a return point.

        :return: the first ``(False, value)`` a callback answered, or ``(True, None)``
        """
        for trigger in self._snapshot(point_name):
            try:
                result = trigger.callback(*args, **kwargs)
            except SkipOtherTriggers:
                return True, None
            self._check_sync(point_name, trigger, result)
            go_on, value = self._check_return_value(point_name, trigger, result)
            if not go_on:
                return False, value
        return True, None

    async def async_point(self, point_name: str, *args: Any, **kwargs: Any) -> bool:
        """Asynchronous form of :meth:`point`: callbacks may be async or return Deferreds."""
        for trigger in self._snapshot(point_name):
            try:
                result = await maybe_async_call(trigger.callback, *args, **kwargs)
            except SkipOtherTriggers:
                return True
            if not result:
                return False
        return True

    async def async_return_point(
        self, point_name: str, *args: Any, **kwargs: Any
    ) -> tuple[bool, Any]:
        """Asynchronous form of :meth:`return_point`."""
        for trigger in self._snapshot(point_name):
            try:
                result = await maybe_async_call(trigger.callback, *args, **kwargs)
            except SkipOtherTriggers:
                return True, None
            go_on, value = self._check_return_value(point_name, trigger, result)
            if not go_on:
                return False, value
        return True, None
