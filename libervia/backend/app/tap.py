"""twistd integration: ``twistd -n libervia-backend [--config FILE] [--log-level L]``.

``twisted/plugins/libervia_backend.py`` points here; this module is only imported when
twistd runs the backend.
"""

import os
import sys
from typing import TYPE_CHECKING

from twisted.python import usage

from libervia.backend.core.config import DEFAULT_SECTION, Config
from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import BackendError, ConfigError
from libervia.backend.core.log import level_from_name

if TYPE_CHECKING:
    from libervia.backend.app.main import Backend


class Options(usage.Options):
    """Command-line options shared by twistd's sub-command and ``libervia-backend``."""

    synopsis = "[--config FILE] [--log-level LEVEL]"
    longdesc = (
        "Run the Libervia backend. Configuration files are read from "
        f"{C.SYSTEM_CONFIG_PATH}, then $XDG_CONFIG_HOME/{C.APP_DIR_NAME}/"
        f"{C.CONFIG_FILE_NAME}, then the file given with --config (or the "
        f"{C.CONFIG_ENV_VAR} environment variable); later files win."
    )
    optParameters = [
        ["config", "c", None, "configuration file read last (overrides the others)"],
        ["log-level", "l", None,
         "lowest level logged: debug, info, warn, error or critical "
         "(default: [DEFAULT] log_level, or info)"],
    ]

    def postOptions(self) -> None:
        from libervia.backend.memory.engines import create_database_engine, database_url

        try:
            self.config = Config.load(self["config"])
            # the database URL is read by the storage as the service is built: a bad
            # one is a usage error, said before anything starts
            create_database_engine(database_url(self.config))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        level = self["log-level"] or self.config.get(DEFAULT_SECTION, "log_level")
        try:
            level_from_name(level)
        except Exception:
            raise usage.UsageError(
                f"invalid log level {level!r}: use debug, info, warn, error or critical"
            ) from None
        self["log-level"] = level


def makeService(options: Options) -> "Backend":  # noqa: N802 (twistd API)
    """Build the backend service for twistd."""
    from twisted.internet import reactor

    from libervia.backend.app.main import Backend
    from libervia.backend.core import log

    log.set_level(options["log-level"])
    log.line_buffer_std_streams()
    try:
        backend = Backend(options.config)
    except BackendError as e:
        # twistd would print a traceback: one line, and exit status 1
        raise SystemExit(f"libervia-backend: error: {e}") from None

    def exit_on_start_failure() -> None:
        # twistd has no way to set the process exit status, and a service manager
        # must see the failure: leave with status 1 once shut down
        if backend.exit_status:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(backend.exit_status)

    reactor.addSystemEventTrigger("after", "shutdown", exit_on_start_failure)
    return backend
