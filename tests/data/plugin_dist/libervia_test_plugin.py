"""A plugin shipped in its own distribution, found through the entry point group."""

from libervia.backend.core.log import getLogger

log = getLogger(__name__)

PLUGIN_INFO = {
    "name": "Test plugin",
    "import_name": "TEST-PLUGIN",
    "type": "MISC",
    "dependencies": ["XEP-0059"],
    "recommendations": ["NOT-INSTALLED-PLUGIN"],
    "main": "TestPlugin",
    "handler": False,
    "description": "Records the backend's status changes through a trigger.",
}


class TestPlugin:
    def __init__(self, host):
        self.host = host
        self.statuses = []
        self.rsm = host.plugins["XEP-0059"]  # dependency loaded first
        host.trigger.add("backend_status", self._on_status)
        log.info("test plugin sees RSM namespace {ns}", ns=self.rsm.namespace)

    def _on_status(self, status):
        self.statuses.append(status)
        log.info("test plugin saw backend status {status}", status=status)
        return True
