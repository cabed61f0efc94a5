"""Suite-wide fixtures.

Sub-folders keep their own fixtures in their own conftest.py files.
"""

import pytest

from libervia.backend.core import log

#: database fixtures (db_url over SQLite and PostgreSQL, --db-url), for every suite
pytest_plugins = ["tests.storage_fixtures"]


@pytest.fixture(autouse=True)
def _reset_log_level():
    """Each test starts from the default log level and no registered secret."""
    level = log.get_level()
    yield
    log.set_level(level)
    with log._secrets_lock:
        log._secrets.clear()
