"""Suite-wide fixtures.

Sub-folders keep their own fixtures in their own conftest.py files.
"""

import pytest

from libervia.backend.core import log

#: database fixtures (db_url over SQLite and PostgreSQL, --db-url), for every suite
pytest_plugins = ["tests.storage_fixtures"]


@pytest.fixture(autouse=True)
def _private_runtime_dir(monkeypatch):
    """Bridge sockets of tests default to a private runtime folder, never the user's.

    A backend built without ``[bridge] socket`` would otherwise listen (or find the
    user's running backend) in ``$XDG_RUNTIME_DIR/libervia``.  The folder is short: a
    UNIX socket path must fit in about 100 bytes.
    """
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="xdg-run-")
    monkeypatch.setenv("XDG_RUNTIME_DIR", folder)
    monkeypatch.delenv("LIBERVIA_BRIDGE_SOCKET", raising=False)
    yield
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _reset_log_level():
    """Each test starts from the default log level, no registered secret and no public
    word."""
    level = log.get_level()
    yield
    log.set_level(level)
    with log._secrets_lock:
        log._secrets.clear()
        log._public.clear()
        log._update_shields()
