"""Service collection whose children start one after the other, each waited for.

Twisted's :class:`~twisted.application.service.MultiService` starts its children
without waiting for the Deferreds they return.  The backend needs a strict order
(storage must be migrated before plugins load, plugins must be loaded before the bridge
answers), so :class:`AsyncMultiService` starts each child only once the previous one
has finished starting, and stops them in reverse order, waiting likewise.  A stop
requested while the start-up is still running cancels what is being started.
"""

from twisted.application import service
from twisted.internet import defer

from libervia.backend.core.log import getLogger

log = getLogger(__name__)


def _name(child: service.IService) -> str:
    return child.name or type(child).__name__


class AsyncMultiService(service.MultiService):
    """A MultiService waiting for each child's start (and stop) Deferred in turn."""

    def __init__(self) -> None:
        super().__init__()
        self._started: list[service.IService] = []
        self._start_d: defer.Deferred | None = None

    def startService(self) -> defer.Deferred:
        service.Service.startService(self)
        self._start_d = defer.ensureDeferred(self._start_children())
        return self._start_d

    async def _start_children(self) -> None:
        for child in list(self):
            log.debug("starting {name}", name=_name(child))
            try:
                await defer.maybeDeferred(child.startService)
            except BaseException:
                log.debug("start of {name} failed, stopping the others", name=_name(child))
                await self._stop_started()
                self.running = False
                raise
            self._started.append(child)

    async def _stop_started(self) -> None:
        while self._started:
            child = self._started.pop()
            log.debug("stopping {name}", name=_name(child))
            try:
                await defer.maybeDeferred(child.stopService)
            except BaseException:
                log.failure("error while stopping {name}", name=_name(child))

    def stopService(self) -> defer.Deferred:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        service.Service.stopService(self)
        start_d = self._start_d
        if start_d is not None and not start_d.called:
            # stop requested during start-up: abandon the child being started
            start_d.cancel()
            try:
                await start_d
            except BaseException:
                pass
        await self._stop_started()
