"""``libervia-backend``: run the backend in the foreground, without twistd.

It behaves like ``twistd -n libervia-backend`` (same options, same service), logs to
standard output, writes no PID file, and exits with status 1 if the start-up fails.
"""

import sys

from twisted.python import usage

from libervia.backend.app.tap import Options


class LauncherOptions(Options):
    def getSynopsis(self) -> str:  # noqa: N802 (Twisted API)
        return f"Usage: libervia-backend {self.synopsis}"


def main(argv: list[str] | None = None) -> int:
    options = LauncherOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"{options.getSynopsis()}\nlibervia-backend: error: {e}", file=sys.stderr)
        return 2

    from twisted.internet import reactor

    from libervia.backend.app.main import Backend
    from libervia.backend.core import log
    from libervia.backend.core.exceptions import BackendError

    log.start_logging(options["log-level"])
    try:
        backend = Backend(options.config, reactor=reactor)
    except BackendError as e:
        print(f"libervia-backend: error: {e}", file=sys.stderr)
        return 1
    reactor.callWhenRunning(backend.startService)
    reactor.addSystemEventTrigger("before", "shutdown", backend.stopService)
    reactor.run()
    return backend.exit_status


if __name__ == "__main__":
    sys.exit(main())
