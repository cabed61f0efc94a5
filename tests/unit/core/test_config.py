"""Configuration: file order, typed getters, clear errors."""

from pathlib import Path

import pytest

from libervia.backend.core.config import DEFAULT_SECTION, Config, default_config_paths
from libervia.backend.core.exceptions import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    system = write(tmp_path / "etc" / "libervia.conf",
                   "[DEFAULT]\nlocal_dir = /srv/system\nlog_level = warn\n"
                   "[storage]\nurl = sqlite:////srv/system.db\n")
    user = write(tmp_path / "xdg" / "libervia" / "libervia.conf",
                 "[DEFAULT]\nlocal_dir = /srv/user\n[plugin XEP-0060]\nmax = 5\n")
    explicit = write(tmp_path / "explicit.conf", "[storage]\nurl = postgresql+psycopg://h/db\n")
    return system, user, explicit


def test_later_files_win_key_by_key(files):
    system, user, explicit = files
    config = Config.load(explicit, env={}, default_paths=[system, user])
    assert config.files == [system, user, explicit]
    assert config.local_dir == Path("/srv/user")
    assert config.get(DEFAULT_SECTION, "log_level") == "warn"  # only set by the system file
    assert config.get("storage", "url") == "postgresql+psycopg://h/db"
    assert config.plugin_section("XEP-0060").get_int("max") == 5


def test_environment_variable_names_the_last_file(files):
    system, user, explicit = files
    config = Config.load(env={"LIBERVIA_CONFIG": str(explicit)}, default_paths=[system])
    assert config.files == [system, explicit]
    assert config.get("storage", "url").startswith("postgresql")


def test_command_line_path_wins_over_environment(files, tmp_path):
    system, __, explicit = files
    other = write(tmp_path / "other.conf", "[storage]\nurl = sqlite:///other.db\n")
    config = Config.load(other, env={"LIBERVIA_CONFIG": str(explicit)}, default_paths=[])
    assert config.files == [other]
    assert config.get("storage", "url") == "sqlite:///other.db"


def test_default_paths_follow_xdg():
    paths = default_config_paths({"XDG_CONFIG_HOME": "/home/u/.cfg"})
    assert paths == [Path("/etc/libervia.conf"), Path("/home/u/.cfg/libervia/libervia.conf")]


def test_missing_optional_files_are_fine_missing_explicit_is_an_error(tmp_path):
    config = Config.load(env={}, default_paths=[tmp_path / "nope.conf"])
    assert config.files == []
    with pytest.raises(ConfigError, match=r"nope\.conf.*--config.*does not exist"):
        Config.load(tmp_path / "nope.conf", env={}, default_paths=[])
    with pytest.raises(ConfigError, match="LIBERVIA_CONFIG"):
        Config.load(env={"LIBERVIA_CONFIG": str(tmp_path / "x.conf")}, default_paths=[])


def test_defaults_without_any_file(tmp_path):
    config = Config.load(env={"XDG_DATA_HOME": str(tmp_path / "data")}, default_paths=[])
    assert config.local_dir == tmp_path / "data" / "libervia"
    assert config.get("storage", "url") is None
    assert config.get(DEFAULT_SECTION, "plugins_disabled") == []
    assert config.get(DEFAULT_SECTION, "log_level") == "info"


def test_default_section_applies_to_other_sections(tmp_path):
    path = write(tmp_path / "c.conf", "[DEFAULT]\ntimeout = 30\n[plugin X]\nother = 1\n")
    config = Config.load(path, env={}, default_paths=[])
    assert config.plugin_section("X").get_int("timeout") == 30
    assert "timeout" in config.plugin_section("Y")


@pytest.mark.parametrize(
    ("text", "getter", "expected"),
    [
        ("yes", "get_bool", True), ("Off", "get_bool", False), ("1", "get_bool", True),
        (" 42 ", "get_int", 42), ("2.5", "get_float", 2.5),
        ("a, b  c\n d", "get_list", ["a", "b", "c", "d"]), ("", "get_list", []),
        ("~/x", "get_path", Path("~/x").expanduser()), (" text ", "get_str", "text"),
    ],
)
def test_typed_getters(tmp_path, text, getter, expected):
    path = write(tmp_path / "c.conf", "[s]\nk = " + text.replace("\n", "\n  ") + "\n")
    config = Config.load(path, env={}, default_paths=[])
    assert getattr(config, getter)("s", "k") == expected


def test_getter_defaults(tmp_path):
    config = Config.from_dict({})
    assert config.get_int("s", "missing", 7) == 7
    assert config.get_bool("s", "missing") is None


@pytest.mark.parametrize(
    ("text", "getter", "message"),
    [("maybe", "get_bool", "boolean"), ("4x", "get_int", "integer"),
     ("x", "get_float", "number")],
)
def test_bad_typed_value_names_file_section_and_key(tmp_path, text, getter, message):
    path = write(tmp_path / "c.conf", f"[plugin P]\nkey = {text}\n")
    config = Config.load(path, env={}, default_paths=[])
    with pytest.raises(ConfigError) as info:
        getattr(config.plugin_section("P"), getter)("key")
    error = str(info.value)
    assert str(path) in error and "[plugin P]" in error and "'key'" in error
    assert message in error


def test_declared_options_are_validated_at_load(tmp_path):
    path = write(tmp_path / "c.conf", "[DEFAULT]\nlog_level = loud\n")
    with pytest.raises(ConfigError) as info:
        Config.load(path, env={}, default_paths=[])
    assert str(path) in str(info.value)
    assert "[DEFAULT]" in str(info.value) and "log_level" in str(info.value)


def test_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path / "c.conf", "no section header\n")
    with pytest.raises(ConfigError, match=r"syntax error.*c\.conf"):
        Config.load(path, env={}, default_paths=[])


def test_values_are_not_interpolated(tmp_path):
    path = write(tmp_path / "c.conf", "[storage]\nurl = postgresql+psycopg://u:p%40ss@h/db\n")
    config = Config.load(path, env={}, default_paths=[])
    assert config.get("storage", "url") == "postgresql+psycopg://u:p%40ss@h/db"


def test_undeclared_get_is_a_programming_error():
    with pytest.raises(KeyError, match="undeclared"):
        Config.from_dict({}).get("nowhere", "nothing")


def test_runtime_dir(tmp_path):
    config = Config.from_dict({}, env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert config.runtime_dir == tmp_path / "libervia"
    assert Config.from_dict({}, env={}).runtime_dir is None
