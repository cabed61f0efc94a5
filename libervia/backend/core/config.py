"""Configuration: ``libervia.conf`` files in INI format.

Files are read in this order, a later one overriding the keys of an earlier one (the
rules, shared with ``li``, are in :mod:`libervia.paths`):

1. ``/etc/libervia.conf``
2. ``$XDG_CONFIG_HOME/libervia/libervia.conf`` (usually ``~/.config/libervia/``)
3. the file given with ``--config``, or else the ``LIBERVIA_CONFIG`` environment variable

The first two are optional; a file named explicitly (3) must exist.  Keys of the
``[DEFAULT]`` section apply to every section that does not set them.  Values are taken
as written: there is no ``%(...)s`` interpolation, so URLs and passwords need no
escaping.

Options the backend knows are *declared* (:data:`OPTIONS`) with a type, a default and a
help text; they are all checked when the configuration is loaded, so that a bad value
stops the start-up at once with an error naming the file, the section and the key.  The
declarations also produce the configuration reference of the documentation.  Plugins
read their own ``[plugin NAME]`` section through :meth:`Config.plugin_section`.
"""

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libervia import paths
from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import ConfigError

DEFAULT_SECTION = paths.DEFAULT_SECTION

_TRUE = frozenset(("1", "yes", "true", "on"))
_FALSE = frozenset(("0", "no", "false", "off"))


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected a boolean (true/false, yes/no, on/off, 1/0)")


def parse_int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def parse_positive_int(value: str) -> int:
    number = parse_int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


def parse_float(value: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def parse_list(value: str) -> list[str]:
    """Split a list written with commas and/or white space (new lines included)."""
    return [v for v in value.replace(",", " ").split() if v]


def parse_path(value: str) -> Path:
    """A path, ``$VARIABLES`` and ``~`` expanded (:func:`libervia.paths.expand_path`)."""
    return Path(paths.expand_path(value))


def parse_str(value: str) -> str:
    return value.strip()


def parse_log_level(value: str) -> str:
    lowered = value.strip().lower()
    if lowered == "warning":
        lowered = "warn"
    if lowered not in C.LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(C.LOG_LEVELS)}")
    return lowered


@dataclass(frozen=True)
class Option:
    """Declaration of a configuration key known to the backend."""

    section: str
    key: str
    parser: Callable[[str], Any]
    #: default value, already typed; ``None`` when computed at run time (see ``help``)
    default: Any
    help: str
    #: how the default is shown in the documentation when it is computed
    default_doc: str | None = None


#: options known to the backend, by (section, key)
OPTIONS: dict[tuple[str, str], Option] = {}


def declare(
    section: str,
    key: str,
    parser: Callable[[str], Any],
    default: Any,
    help: str,
    default_doc: str | None = None,
) -> Option:
    """Declare a configuration option (used at import time by the modules owning it)."""
    option = Option(section, key, parser, default, help, default_doc)
    OPTIONS[(section, key)] = option
    return option


declare(
    DEFAULT_SECTION, "local_dir", parse_path, None,
    "Folder where the backend keeps its data (database, keys, caches).",
    default_doc="the XDG data folder: ``$XDG_DATA_HOME/libervia`` "
    "(usually ``~/.local/share/libervia``)",
)
declare(
    DEFAULT_SECTION, "plugins_disabled", parse_list, [],
    "Import names of plugins not to load (e.g. ``XEP-0277``), separated by commas or "
    "spaces. Plugins depending on them are not loaded either.",
)
declare(
    DEFAULT_SECTION, "log_level", parse_log_level, "info",
    "Lowest level of the log lines written: debug, info, warn, error or critical.",
)
declare(
    "storage", "url", parse_str, None,
    "SQLAlchemy URL of the database, e.g. ``postgresql+psycopg://user@/libervia``.",
    default_doc="SQLite file ``{local_dir}/libervia.db``",
)
declare(
    "bridge", "socket", parse_path, None,
    "Path of the UNIX socket on which frontends reach the backend.",
    default_doc="``$XDG_RUNTIME_DIR/libervia/bridge.sock``, or "
    "``{local_dir}/bridge.sock`` when there is no runtime folder",
)


def default_config_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    """Return the optional configuration files, lowest precedence first."""
    return [Path(p) for p in paths.default_config_files(env)]


class Section:
    """Read-only typed view of one section (plugins get theirs this way)."""

    def __init__(self, config: "Config", name: str) -> None:
        self._config = config
        self.name = name

    def __contains__(self, key: str) -> bool:
        return self._config.has(self.name, key)

    def get(self, key: str, default: Any = None) -> str | None:
        return self._config.get_str(self.name, key, default)

    def get_str(self, key: str, default: Any = None) -> str | None:
        return self._config.get_str(self.name, key, default)

    def get_int(self, key: str, default: Any = None) -> int | None:
        return self._config.get_int(self.name, key, default)

    def get_float(self, key: str, default: Any = None) -> float | None:
        return self._config.get_float(self.name, key, default)

    def get_bool(self, key: str, default: Any = None) -> bool | None:
        return self._config.get_bool(self.name, key, default)

    def get_list(self, key: str, default: Any = None) -> list[str] | None:
        return self._config.get_list(self.name, key, default)

    def get_path(self, key: str, default: Any = None) -> Path | None:
        return self._config.get_path(self.name, key, default)


class Config:
    """Merged configuration, remembering which file set each value.

    Build it with :meth:`load`; tests may build it from a mapping with
    :meth:`from_dict`.
    """

    def __init__(self) -> None:
        # section -> key -> (raw value, source file)
        self._values: dict[str, dict[str, tuple[str, str]]] = {}
        #: files actually read, in order
        self.files: list[Path] = []
        self._env: Mapping[str, str] = os.environ

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        default_paths: Iterable[Path] | None = None,
    ) -> "Config":
        """Read the configuration files and validate every declared option.

        :param path: file given on the command line (``--config``); if ``None``, the
            ``LIBERVIA_CONFIG`` environment variable is used when set
        :param env: environment (default: ``os.environ``)
        :param default_paths: optional files read first (default:
            :func:`default_config_paths`)
        :raise ConfigError: unreadable file, syntax error or invalid value
        """
        env = os.environ if env is None else env
        config = cls()
        config._env = env
        try:
            files = paths.config_files(path, env, default_paths)
        except paths.ConfigFileError as e:
            raise ConfigError(str(e)) from None
        for file in files:
            config.read_file(Path(file))
        config.validate()
        return config

    @classmethod
    def from_dict(
        cls,
        values: Mapping[str, Mapping[str, Any]],
        env: Mapping[str, str] | None = None,
    ) -> "Config":
        """Build a configuration from ``{section: {key: value}}`` (values made strings)."""
        config = cls()
        config._env = os.environ if env is None else env
        for section, keys in values.items():
            for key, value in keys.items():
                if isinstance(value, (list, tuple)):
                    value = ", ".join(str(v) for v in value)
                config._values.setdefault(section, {})[key.lower()] = (
                    str(value), "<memory>"
                )
        config.validate()
        return config

    def read_file(self, path: Path) -> None:
        """Read one more file, overriding the keys it sets (:func:`paths.read_config_files`).

        :raise ConfigError: unreadable file or syntax error
        """
        try:
            paths.read_config_files([path], self._values)
        except paths.ConfigFileError as e:
            raise ConfigError(str(e)) from e.__cause__
        self.files.append(path)

    # lookup

    def _lookup(self, section: str, key: str) -> tuple[str, str, str] | None:
        """Return (raw value, source file, section it was found in) or None."""
        return paths.config_value(self._values, section, key)

    def has(self, section: str, key: str) -> bool:
        return self._lookup(section, key) is not None

    def sections(self) -> list[str]:
        return [s for s in self._values if s != DEFAULT_SECTION]

    def _get(
        self, section: str, key: str, parser: Callable[[str], Any], default: Any
    ) -> Any:
        found = self._lookup(section, key)
        if found is None:
            option = OPTIONS.get((section, key)) or OPTIONS.get((DEFAULT_SECTION, key))
            if default is None and option is not None:
                return option.default
            return default
        try:
            return paths.parse_config_value(found, key, parser)
        except paths.ConfigFileError as e:
            raise ConfigError(str(e)) from None

    def get_str(self, section: str, key: str, default: Any = None) -> str | None:
        return self._get(section, key, parse_str, default)

    def get_int(self, section: str, key: str, default: Any = None) -> int | None:
        return self._get(section, key, parse_int, default)

    def get_float(self, section: str, key: str, default: Any = None) -> float | None:
        return self._get(section, key, parse_float, default)

    def get_bool(self, section: str, key: str, default: Any = None) -> bool | None:
        return self._get(section, key, parse_bool, default)

    def get_list(self, section: str, key: str, default: Any = None) -> list[str] | None:
        return self._get(section, key, parse_list, default)

    def get_path(self, section: str, key: str, default: Any = None) -> Path | None:
        return self._get(section, key, parse_path, default)

    def get(self, section: str, key: str) -> Any:
        """Get a *declared* option, parsed with its declared type and default."""
        option = OPTIONS.get((section, key))
        if option is None:
            raise KeyError(f"undeclared configuration option [{section}] {key}")
        return self._get(section, key, option.parser, option.default)

    def plugin_section(self, import_name: str) -> Section:
        """Return the ``[plugin IMPORT_NAME]`` section (which may be empty)."""
        return Section(self, f"plugin {import_name}")

    def validate(self) -> None:
        """Parse every declared option present in the files, raising on the first error."""
        for option in OPTIONS.values():
            if option.section == DEFAULT_SECTION:
                # a DEFAULT key is checked where it is written
                if option.key in self._values.get(DEFAULT_SECTION, {}):
                    self._get(DEFAULT_SECTION, option.key, option.parser, None)
            elif option.key in self._values.get(option.section, {}):
                self._get(option.section, option.key, option.parser, None)

    # well-known computed values

    @property
    def env(self) -> Mapping[str, str]:
        """The environment the default folders are taken from (``os.environ`` unless
        given to :meth:`load` or :meth:`from_dict`)."""
        return self._env

    @property
    def local_dir(self) -> Path:
        """Folder of the backend's data (``[DEFAULT] local_dir``, else the XDG data
        folder: :func:`libervia.paths.local_dir`)."""
        path = self.get(DEFAULT_SECTION, "local_dir")
        return Path(paths.local_dir(None if path is None else str(path), self._env))

    @property
    def runtime_dir(self) -> Path | None:
        """Per-user runtime folder (``$XDG_RUNTIME_DIR/libervia``), if there is one."""
        runtime = paths.runtime_dir(self._env)
        return None if runtime is None else Path(runtime)

    def describe_sources(self) -> str:
        if not self.files:
            return "no configuration file (defaults only)"
        return "configuration read from " + ", ".join(str(p) for p in self.files)
