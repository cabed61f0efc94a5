"""Helpers for the tests of service collections (the kernel's and the Backend's)."""

from twisted.application import service
from twisted.internet import defer


class Step(service.Service):
    """A child whose start and stop end when the test says so."""

    def __init__(self, name, journal):
        self.setName(name)
        self.journal = journal
        self.start_d = defer.Deferred()
        self.stop_d = defer.Deferred()

    def startService(self):
        super().startService()
        self.journal.append(f"start {self.name}")
        return self.start_d

    def stopService(self):
        super().stopService()
        self.journal.append(f"stop {self.name}")
        return self.stop_d


def collect(d):
    results = []
    d.addBoth(results.append)
    return results
