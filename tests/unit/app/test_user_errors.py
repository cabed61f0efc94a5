"""Errors a user can meet while setting the backend up: one line saying what to do,
never a traceback (issue #15, point 6)."""

import sys

import pytest
from sqlalchemy.engine import make_url
from twisted.python import usage

from libervia.backend.app import launcher, tap
from libervia.backend.core.exceptions import StartupError
from libervia.backend.memory.engines import PostgresEngine
from libervia.backend.xmpp.client import ConnectionFailed, tls_options

BAD_PEM = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"


@pytest.fixture
def without_drivers(monkeypatch):
    """psycopg and psycopg2 not installed: None in sys.modules makes their import
    raise ModuleNotFoundError."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("psycopg", "psycopg2")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)


@pytest.mark.parametrize(("url", "advice"), [
    ("postgresql+psycopg://libervia@localhost/libervia",
     "but its driver (psycopg) is not installed: install the backend's postgresql "
     "extra (pip install 'libervia-backend[postgresql]')"),
    ("postgresql+psycopg2://libervia@localhost/libervia",
     "needs the driver psycopg2, which is not installed (postgresql+psycopg2): write "
     "the URL postgresql+psycopg://USER@HOST/DATABASE and install the backend's "
     "postgresql extra"),
])
def test_a_postgresql_url_without_its_driver_says_what_to_install(
    without_drivers, url, advice
):
    with pytest.raises(StartupError) as caught:
        PostgresEngine(make_url(url)).create_sa_engine(pool_size=1)
    message = str(caught.value)
    assert advice in message
    assert "\n" not in message


def test_a_ca_file_with_an_unreadable_certificate_is_a_connection_error(tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(BAD_PEM)
    with pytest.raises(ConnectionFailed, match=f"CA file {ca_file} holds a certificate "
                       "that can't be read .*bad base64 decode"):
        tls_options("example.org", str(ca_file))


@pytest.mark.parametrize(("url", "words"), [
    ("mysql://user@host/db", "unsupported database 'mysql' in [storage] url"),
    ("::::", "invalid value for key 'url' of section [storage]"),
])
def test_a_bad_database_url_is_a_usage_error_of_both_launchers(tmp_path, capsys, url,
                                                               words):
    config = tmp_path / "bad.conf"
    config.write_text(f"[DEFAULT]\nlocal_dir = {tmp_path / 'local'}\n"
                      f"[storage]\nurl = {url}\n")
    with pytest.raises(usage.UsageError, match=words.replace("[", r"\[")):
        tap.Options().parseOptions(["--config", str(config)])
    assert launcher.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"libervia-backend: error: {words}" in err
    assert "Traceback" not in err


def test_twistd_service_that_cant_be_built_exits_with_one_line(tmp_path, monkeypatch):
    from libervia.backend.app import main

    def refuse(config):
        raise StartupError("the storage can't be built: fix it")

    monkeypatch.setattr(main, "Backend", refuse)
    options = tap.Options()
    options.parseOptions(["--config", str(_config(tmp_path))])
    with pytest.raises(SystemExit) as caught:
        tap.makeService(options)
    assert caught.value.code == "libervia-backend: error: the storage can't be built: fix it"


def _config(tmp_path):
    config = tmp_path / "ok.conf"
    config.write_text(f"[DEFAULT]\nlocal_dir = {tmp_path / 'local'}\n")
    return config
