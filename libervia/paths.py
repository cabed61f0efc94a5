"""Where Libervia's configuration files and bridge socket are: the one place of the rules.

The backend (:mod:`libervia.backend.core.config`, :mod:`libervia.backend.bridge.server`)
and ``li`` (:mod:`libervia.cli.bridge_client`) both use these functions, so that they
always agree on which files configure the backend and where its socket is.  This module
uses the standard library only and imports nothing of ``libervia``: ``li`` must start in
a few milliseconds and never import the backend (which pulls Twisted).  For the same
reason paths are strings (``pathlib`` is not imported) and ``configparser`` is imported
only when a file is read.  Every function reading the environment takes it as ``env``
(``os.environ`` by default), so that tests pass their own.

**Configuration files**, read in this order, a later one overriding the keys of an
earlier one (:func:`config_files`):

1. ``/etc/libervia.conf``;
2. ``$XDG_CONFIG_HOME/libervia/libervia.conf`` (``~/.config`` when the variable is
   unset or empty);
3. the file named with ``--config``, else by the ``LIBERVIA_CONFIG`` environment
   variable.

The first two are read when they exist; a file named explicitly must exist.  Files are
INI, read without ``%(...)s`` interpolation; keys of ``[DEFAULT]`` apply to every section
not setting them, across files (:func:`config_value`).

**Data folder** (``local_dir``, :func:`local_dir`): ``[DEFAULT] local_dir``, else
``$XDG_DATA_HOME/libervia``, else ``~/.local/share/libervia``.

**Bridge socket** (:func:`bridge_socket`): ``[bridge] socket``, else
``$XDG_RUNTIME_DIR/libervia/bridge.sock`` when ``$XDG_RUNTIME_DIR`` is an existing
folder, else ``{local_dir}/bridge.sock``.  A frontend also accepts a path given to it,
which wins over the configuration (:func:`frontend_socket`: ``li --socket``, then
``LIBERVIA_BRIDGE_SOCKET``).

Paths written in the configuration or given to a frontend have ``$VARIABLES`` and ``~``
expanded (:func:`expand_path`), then are made absolute from the working folder
(:func:`absolute`).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import TypeVar

    T = TypeVar("T")

    #: section -> key (lower case) -> (raw value, file it comes from)
    ConfigValues = dict[str, dict[str, tuple[str, str]]]

#: name of the folders of Libervia (XDG configuration, data and runtime folders)
APP_DIR_NAME = "libervia"
CONFIG_FILE_NAME = "libervia.conf"
SYSTEM_CONFIG_PATH = "/etc/libervia.conf"
#: environment variable naming the configuration file read last
CONFIG_ENV_VAR = "LIBERVIA_CONFIG"
#: environment variable giving a frontend the bridge socket, over the configuration
SOCKET_ENV_VAR = "LIBERVIA_BRIDGE_SOCKET"
SOCKET_NAME = "bridge.sock"
#: section whose keys apply to every section not setting them
DEFAULT_SECTION = "DEFAULT"


class PathError(Exception):
    """A path given to a frontend can't be used; the message says which and why."""


class ConfigFileError(PathError):
    """A configuration file is missing, unreadable or malformed, or a path in it is bad.

    The message names the file (and the section and key of a bad value).
    """


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


# paths as written


def expand_path(value: str) -> str:
    """A path as written in a configuration file or given to a frontend, expanded.

    Blanks around it are dropped, then ``$VARIABLES`` (of the process's environment) and
    a leading ``~`` or ``~user`` are expanded.  The result may still be relative.

    :raise ValueError: the value is empty, or ``~user`` names no known home folder
    """
    value = value.strip()
    if not value:
        raise ValueError("expected a path")
    path = os.path.expanduser(os.path.expandvars(value))
    if path.startswith("~"):
        raise ValueError(f"can't find the home folder of {path.split('/', 1)[0]}")
    return path


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute from the working folder, with ``.`` and repeated ``/`` dropped.

    ``..`` is kept, as :meth:`pathlib.Path.absolute` keeps it: the kernel resolves it
    after following symbolic links, which :func:`os.path.abspath` would not.
    """
    path = os.fspath(path)
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    return "/" + "/".join(part for part in path.split("/") if part not in ("", "."))


# configuration files


def default_config_files(env: Mapping[str, str] | None = None) -> list[str]:
    """The optional configuration files, lowest precedence first (existing or not)."""
    env = _environ(env)
    xdg_config = env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return [
        SYSTEM_CONFIG_PATH,
        os.path.join(xdg_config, APP_DIR_NAME, CONFIG_FILE_NAME),
    ]


def explicit_config_file(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The configuration file named explicitly, read last: ``path``, else the file
    ``$LIBERVIA_CONFIG`` names (when set and not empty), else ``None``.

    :param path: the ``--config`` option; an empty string names no file and is an error
    :raise ConfigFileError: the file does not exist or is not a file
    """
    env = _environ(env)
    if path is not None:
        origin, value = "--config", os.fspath(path)
    elif env.get(CONFIG_ENV_VAR):
        origin, value = CONFIG_ENV_VAR, env[CONFIG_ENV_VAR]
    else:
        return None
    explicit = os.path.expanduser(value)
    if not os.path.isfile(explicit):
        raise ConfigFileError(
            f"configuration file {explicit} (given by {origin}) does not exist or is "
            "not a file"
        )
    return explicit


def config_files(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    defaults: Iterable[str | os.PathLike[str]] | None = None,
) -> list[str]:
    """The configuration files to read, in order: the optional ones that exist, then the
    one named explicitly (see :func:`explicit_config_file`).

    :param defaults: the optional files (default: :func:`default_config_files`)
    :raise ConfigFileError: the file named explicitly does not exist
    """
    optional = default_config_files(env) if defaults is None else defaults
    files = [os.fspath(f) for f in optional if os.path.isfile(f)]
    explicit = explicit_config_file(path, env)
    if explicit is not None:
        files.append(explicit)
    return files


def read_config_files(
    files: Iterable[str | os.PathLike[str]], values: ConfigValues | None = None
) -> ConfigValues:
    """Read INI files, in order, into ``values``: a later file overrides a key.

    ``[DEFAULT]`` is read as a plain section (see :func:`config_value`), values are taken
    as written (no ``%(...)s`` interpolation) and keys are lower case.  A file is merged
    only once it has been read whole.

    :param values: where to merge (default: a new mapping), also returned
    :raise ConfigFileError: a file can't be read, is not UTF-8, or is not valid INI
    """
    import configparser

    values = {} if values is None else values
    for file in files:
        path = os.fspath(file)
        # no default section here: DEFAULT keys are inherited by config_value, across
        # files, and each value keeps the file it comes from
        parser = configparser.ConfigParser(
            interpolation=None, default_section="\0no default section"
        )
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f, source=path)
        except OSError as e:
            raise ConfigFileError(
                f"can't read configuration file {path}: {e.strerror}"
            ) from e
        except UnicodeDecodeError as e:
            raise ConfigFileError(
                f"configuration file {path} is not valid UTF-8: {e}"
            ) from e
        except configparser.Error as e:
            raise ConfigFileError(f"syntax error in configuration file {path}: {e}") from e
        for section in parser.sections():
            for key, value in parser.items(section):
                values.setdefault(section, {})[key] = (value, path)
    return values


def config_value(
    values: ConfigValues, section: str, key: str
) -> tuple[str, str, str] | None:
    """(raw value, file, section it was found in) of ``key`` in ``section``, else in
    ``[DEFAULT]``; ``None`` when neither sets it."""
    key = key.lower()
    for name in (section, DEFAULT_SECTION):
        found = values.get(name, {}).get(key)
        if found is not None:
            return found[0], found[1], name
    return None


def parse_config_value(
    found: tuple[str, str, str], key: str, parser: Callable[[str], T]
) -> T:
    """Parse a value :func:`config_value` found with ``parser``.

    :raise ConfigFileError: ``parser`` raised :class:`ValueError`; the message names the
        value, the key, the section and the file, and says what was expected
    """
    raw, source, section = found
    try:
        return parser(raw)
    except ValueError as e:
        raise ConfigFileError(
            f"invalid value {raw!r} for key {key!r} of section [{section}] in "
            f"{source}: {e}"
        ) from None


def config_path_value(values: ConfigValues, section: str, key: str) -> str | None:
    """The path ``key`` of ``section`` (or of ``[DEFAULT]``) is set to, expanded
    (:func:`expand_path`); ``None`` when not set.

    :raise ConfigFileError: the value is not a path (see :func:`parse_config_value`)
    """
    found = config_value(values, section, key)
    return None if found is None else parse_config_value(found, key, expand_path)


# folders and socket


def local_dir(configured: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The backend's data folder, absolute.

    :param configured: ``[DEFAULT] local_dir``, expanded; when ``None``,
        ``$XDG_DATA_HOME/libervia`` (the variable set and not empty), else
        ``~/.local/share/libervia``: what ``platformdirs.user_data_dir("libervia")``
        answers on Linux, the environment being ``env``
    """
    if configured is None:
        xdg_data = _environ(env).get("XDG_DATA_HOME")
        if xdg_data:
            configured = os.path.join(xdg_data, APP_DIR_NAME)
        else:
            configured = os.path.expanduser(os.path.join("~", ".local", "share",
                                                         APP_DIR_NAME))
    return absolute(configured)


def runtime_dir(env: Mapping[str, str] | None = None) -> str | None:
    """``$XDG_RUNTIME_DIR/libervia`` when ``$XDG_RUNTIME_DIR`` is an existing folder,
    else ``None`` (the ``libervia`` folder itself may not exist yet)."""
    runtime = _environ(env).get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, APP_DIR_NAME)
    return None


def bridge_socket(
    configured: str | os.PathLike[str] | None,
    local_dir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> str:
    """Where the backend listens.

    :param configured: ``[bridge] socket``, expanded; made absolute when given
    :param local_dir: the data folder (see :func:`local_dir`)
    :return: ``configured``, else ``$XDG_RUNTIME_DIR/libervia/bridge.sock`` when there
        is a runtime folder (:func:`runtime_dir`), else ``{local_dir}/bridge.sock``
    """
    if configured is not None:
        return absolute(configured)
    runtime = runtime_dir(env)
    if runtime is not None:
        return os.path.join(runtime, SOCKET_NAME)
    return os.path.join(os.fspath(local_dir), SOCKET_NAME)


def frontend_socket(
    explicit: str | os.PathLike[str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Where a frontend finds the backend's bridge socket.

    In order: ``explicit`` (``li --socket``; an empty one is not given), the
    ``LIBERVIA_BRIDGE_SOCKET`` environment variable (when set and not empty), else the
    backend's own rule (:func:`bridge_socket`) on the backend's configuration files
    (:func:`config_files`, ``config_path`` being ``--config``).

    :raise PathError: the path given is not a path
    :raise ConfigFileError: a configuration file can't be read, or a path in it is bad
    """
    env = _environ(env)
    given = [(explicit, "--socket"), (env.get(SOCKET_ENV_VAR), SOCKET_ENV_VAR)]
    for value, origin in given:
        if value:
            value = os.fspath(value)
            try:
                return absolute(expand_path(value))
            except ValueError as e:
                raise PathError(
                    f"invalid bridge socket {value!r} given by {origin}: {e}"
                ) from None
    values = read_config_files(config_files(config_path, env))
    data_folder = local_dir(config_path_value(values, DEFAULT_SECTION, "local_dir"), env)
    return bridge_socket(config_path_value(values, "bridge", "socket"), data_folder, env)
