"""Database fixtures: the same storage tests run on SQLite and on PostgreSQL.

Registered as a pytest plugin by ``tests/conftest.py``, so every suite can use them:

* ``db_url``: URL of a new, empty database, once per engine (``sqlite`` and
  ``postgresql``; the PostgreSQL run is marked ``integration``);
* ``postgresql_url``: the same, PostgreSQL only.

PostgreSQL: unless told otherwise, a throwaway server is started for the session
(``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package, in a temporary folder,
listening on 127.0.0.1 on a free port) and each test gets its own database in it.  To
use an existing server instead, give a URL with ``--db-url`` or the
``LIBERVIA_TEST_DB_URL`` environment variable, e.g.
``postgresql+psycopg://me@localhost/postgres``: the user must be allowed to create
databases, since each test creates (and drops) one.  When PostgreSQL is not available
the tests are skipped, except under CI (``CI=true``), where they fail.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from tests.support import unavailable

DB_URL_ENV = "LIBERVIA_TEST_DB_URL"
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db-url",
        default=None,
        help=f"PostgreSQL server to run the storage tests on, instead of a throwaway "
        f"one (also: ${DB_URL_ENV}); each test creates its own database there",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_postgresql_bindir() -> Path | None:
    """Folder holding ``initdb`` and ``pg_ctl`` (newest Debian version first)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class ThrowawayPostgres:
    """A PostgreSQL server in a temporary folder, for the test session only.

    ``initdb`` refuses to run as root: as root, the server runs as the ``postgres``
    user, in a folder it owns.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="libervia-pg-"))
        self.base.chmod(0o700)  # whatever the umask a test may have left
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        # an explicit umask: the server needs rwx on the folders it creates, whatever
        # umask a test may have left in this process
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, umask=0o077
        )
        if result.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{log}"
            )

    def start(self) -> None:
        if self._as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C",
        )
        self.resume()

    def resume(self) -> None:
        """Start the server (again, after :meth:`halt`); return once it accepts clients."""
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=self.port,
            database="postgres",
        )

    def halt(self) -> None:
        """Stop the server, keeping its data for :meth:`resume` (clients are cut off)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                  "-w", "stop")

    def stop(self) -> None:
        try:
            self.halt()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgresql_server_url(request: pytest.FixtureRequest) -> Iterator[URL]:
    """URL of a PostgreSQL server's maintenance database (given, or started here)."""
    given = request.config.getoption("--db-url", default=None) or os.environ.get(DB_URL_ENV)
    if given:
        url = make_url(given)
        if url.get_backend_name() != "postgresql":
            pytest.fail(f"--db-url / {DB_URL_ENV} must be a postgresql+psycopg:// URL")
        yield url
        return
    server = start_throwaway_postgres()
    try:
        yield server.url
    finally:
        server.stop()


def start_throwaway_postgres() -> ThrowawayPostgres:
    """Start a :class:`ThrowawayPostgres`; skip (fail under CI) when that can't be done."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[postgresql]'")
    bindir = find_postgresql_bindir()
    if bindir is None:
        unavailable(
            "PostgreSQL is not installed (no initdb): install Debian's postgresql "
            f"package, or point {DB_URL_ENV} to a server"
        )
    server = ThrowawayPostgres(bindir)
    try:
        server.start()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(server.base, ignore_errors=True)
        unavailable(f"can't start a throwaway PostgreSQL server: {e}")
    return server


@pytest.fixture
def postgresql_url(postgresql_server_url: URL) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"libervia_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgresql_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield postgresql_server_url.set(database=name).render_as_string(
            hide_password=False
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a new SQLite database file (not created yet) in a private folder."""
    return f"sqlite:///{tmp_path / 'local' / 'libervia.db'}"


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a new, empty database, for each engine in turn."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgresql_url")
