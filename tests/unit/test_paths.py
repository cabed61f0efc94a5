"""The path rules shared by the backend and li: configuration files, data folder, socket."""

import os
import sys
from pathlib import Path

import platformdirs
import pytest

from libervia import paths
from libervia.backend.bridge.server import socket_path
from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# configuration files


def test_default_files_are_the_system_one_then_the_xdg_one(monkeypatch):
    assert paths.default_config_files({"XDG_CONFIG_HOME": "/home/u/.cfg"}) == [
        "/etc/libervia.conf", "/home/u/.cfg/libervia/libervia.conf"]
    monkeypatch.setenv("HOME", "/home/u")
    for env in ({}, {"XDG_CONFIG_HOME": ""}):
        assert paths.default_config_files(env)[1] == "/home/u/.config/libervia/libervia.conf"


def test_only_existing_optional_files_are_read_and_the_explicit_one_comes_last(tmp_path):
    present = write(tmp_path / "present.conf", "")
    explicit = write(tmp_path / "explicit.conf", "")
    other = write(tmp_path / "other.conf", "")
    defaults = [tmp_path / "absent.conf", present]
    env = {"LIBERVIA_CONFIG": str(other)}
    assert paths.config_files(explicit, env, defaults) == [str(present), str(explicit)]
    assert paths.config_files(None, env, defaults) == [str(present), str(other)]
    assert paths.config_files(None, {"LIBERVIA_CONFIG": ""}, defaults) == [str(present)]


def test_a_missing_explicit_file_is_an_error_naming_who_gave_it(tmp_path):
    missing = tmp_path / "nope.conf"
    with pytest.raises(paths.ConfigFileError, match=r"nope\.conf \(given by --config\)"):
        paths.config_files(missing, {}, [])
    with pytest.raises(paths.ConfigFileError, match=r"given by LIBERVIA_CONFIG"):
        paths.config_files(None, {"LIBERVIA_CONFIG": str(missing)}, [])
    # an empty --config names a file too: it is not replaced by $LIBERVIA_CONFIG
    with pytest.raises(paths.ConfigFileError, match="given by --config"):
        paths.config_files("", {"LIBERVIA_CONFIG": str(missing)}, [])


def test_later_files_win_and_default_keys_apply_across_files(tmp_path):
    first = write(tmp_path / "a.conf", "[DEFAULT]\nsocket = /a.sock\nKey = %(x)s\n")
    second = write(tmp_path / "b.conf", "[bridge]\nother = 1\n[DEFAULT]\nkey = b\n")
    values = paths.read_config_files([first, second])
    assert paths.config_value(values, "bridge", "socket") == ("/a.sock", str(first),
                                                              "DEFAULT")
    assert paths.config_value(values, "bridge", "KEY") == ("b", str(second), "DEFAULT")
    assert paths.config_value(values, "bridge", "other") == ("1", str(second), "bridge")
    assert paths.config_value(values, "bridge", "missing") is None
    # values are taken as written: no interpolation
    assert paths.read_config_files([first])["DEFAULT"]["key"] == ("%(x)s", str(first))


def test_a_file_that_is_not_read_whole_changes_nothing(tmp_path):
    good = write(tmp_path / "good.conf", "[bridge]\nsocket = /good.sock\n")
    broken = write(tmp_path / "broken.conf", "[bridge]\nsocket = /bad.sock\n[bridge]\n")
    values = paths.read_config_files([good])
    with pytest.raises(paths.ConfigFileError, match=r"syntax error.*broken\.conf"):
        paths.read_config_files([broken], values)
    assert values == {"bridge": {"socket": ("/good.sock", str(good))}}
    latin = tmp_path / "latin.conf"
    latin.write_bytes(b"[s]\nk = caf\xe9\n")
    with pytest.raises(paths.ConfigFileError, match=r"latin\.conf is not valid UTF-8"):
        paths.read_config_files([latin])


# paths as written


def test_paths_expand_variables_and_home(monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("SOCKETS", "/srv/sockets")
    assert paths.expand_path("  ~/b.sock ") == "/home/u/b.sock"
    assert paths.expand_path("$SOCKETS/b.sock") == "/srv/sockets/b.sock"
    with pytest.raises(ValueError, match="expected a path"):
        paths.expand_path("  ")
    with pytest.raises(ValueError, match="home folder of ~no-such-user-here"):
        paths.expand_path("~no-such-user-here/b.sock")


def test_absolute_keeps_parent_steps_as_pathlib_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for written in ("run/../b.sock", "./run//b.sock", "/x/./y/", "/a/../b", "b.sock"):
        assert paths.absolute(written) == str(Path(written).absolute())
    # through a symbolic link, "link/.." is the link target's parent, not tmp_path
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "er")
    path = paths.absolute("link/../b.sock")
    assert os.path.realpath(os.path.dirname(path)) == str((tmp_path / "deep").resolve())


# folders and socket


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
@pytest.mark.parametrize("xdg_data", [None, "", "/srv/data"])
def test_default_data_folder_is_platformdirs_answer_on_linux(monkeypatch, xdg_data):
    # platformdirs reads os.environ: give it the environment given to the rule
    monkeypatch.setenv("HOME", "/home/u")
    if xdg_data is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg_data)
    expected = platformdirs.user_data_dir("libervia", appauthor=False)
    assert paths.local_dir(None, os.environ) == expected
    assert paths.local_dir(None, dict(os.environ)) == expected


def test_data_folder_is_the_configured_one_else_xdg_else_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/home/u")
    assert paths.local_dir("data", {"XDG_DATA_HOME": "/x"}) == str(tmp_path / "data")
    assert paths.local_dir(None, {"XDG_DATA_HOME": "/x"}) == "/x/libervia"
    assert paths.local_dir(None, {}) == "/home/u/.local/share/libervia"


def test_runtime_folder_only_when_it_exists(tmp_path):
    assert paths.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == f"{tmp_path}/libervia"
    assert paths.runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "gone")}) is None
    assert paths.runtime_dir({"XDG_RUNTIME_DIR": ""}) is None
    assert paths.runtime_dir({}) is None


def test_socket_is_the_configured_one_else_runtime_else_data_folder(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert paths.bridge_socket("/s/b.sock", "/data", env) == "/s/b.sock"
    assert paths.bridge_socket(None, "/data", env) == f"{tmp_path}/libervia/bridge.sock"
    assert paths.bridge_socket(None, "/data", {}) == "/data/bridge.sock"


def test_a_socket_given_to_the_frontend_wins_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    conf = write(tmp_path / "c.conf", "[bridge]\nsocket = /conf.sock\n")
    env = {"LIBERVIA_BRIDGE_SOCKET": "~/env.sock"}
    assert paths.frontend_socket("/opt.sock", conf, env) == "/opt.sock"
    assert paths.frontend_socket("", conf, env) == "/home/u/env.sock"
    assert paths.frontend_socket(None, conf, {"LIBERVIA_BRIDGE_SOCKET": ""}) == "/conf.sock"
    with pytest.raises(paths.PathError, match="given by --socket: expected a path"):
        paths.frontend_socket(" ", conf, env)


@pytest.mark.parametrize("text, key, section", [
    ("[bridge]\nsocket =\n", "socket", "bridge"),
    ("[DEFAULT]\nlocal_dir = ~no-such-user-here/x\n", "local_dir", "DEFAULT"),
])
def test_a_bad_path_is_refused_alike_by_backend_and_frontend(tmp_path, text, key, section):
    conf = write(tmp_path / "c.conf", text)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "no-config")}
    with pytest.raises(ConfigError) as backend:
        Config.load(conf, env=env, default_paths=[])
    with pytest.raises(paths.ConfigFileError) as frontend:
        paths.frontend_socket(None, conf, env)
    assert str(frontend.value) == str(backend.value)
    assert f"key {key!r} of section [{section}] in {conf}" in str(backend.value)


def test_backend_and_frontend_agree_on_parent_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = write(tmp_path / "c.conf", "[bridge]\nsocket = run/../b.sock\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "no-config")}
    backend = socket_path(Config.load(conf, env=env, default_paths=[]))
    assert backend == Path("run/../b.sock").absolute()
    assert paths.frontend_socket(None, conf, env) == str(backend)
