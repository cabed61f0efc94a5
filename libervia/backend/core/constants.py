"""Constants of the backend, grouped in one namespace: ``from ... import C``."""

from typing import Final

from libervia import paths


class C:
    """Backend-wide constants."""

    APP_NAME: Final = "Libervia"
    APP_COMPONENT: Final = "backend"
    #: name used for directories (XDG config and data) and the config file stem; these
    #: four are defined with the path rules, in libervia.paths
    APP_DIR_NAME: Final = paths.APP_DIR_NAME
    CONFIG_FILE_NAME: Final = paths.CONFIG_FILE_NAME
    SYSTEM_CONFIG_PATH: Final = paths.SYSTEM_CONFIG_PATH
    CONFIG_ENV_VAR: Final = paths.CONFIG_ENV_VAR

    #: entry point group through which plugins are discovered
    PLUGINS_ENTRY_POINT_GROUP: Final = "libervia.backend.plugins"
    #: distribution shipping the backend (its own plugins come from there)
    DISTRIBUTION: Final = "libervia-backend"

    # plugin types, in a stable order used to break ties when loading
    PLUG_TYPE_XEP: Final = "XEP"
    PLUG_TYPE_MISC: Final = "MISC"
    PLUG_TYPE_EXP: Final = "EXP"
    PLUG_TYPE_SEC: Final = "SEC"
    PLUG_TYPE_ENTRY_POINT: Final = "ENTRY_POINT"
    PLUG_TYPES: Final = (PLUG_TYPE_XEP, PLUG_TYPE_SEC, PLUG_TYPE_MISC, PLUG_TYPE_EXP,
                         PLUG_TYPE_ENTRY_POINT)

    PLUG_MODE_CLIENT: Final = "client"
    PLUG_MODE_COMPONENT: Final = "component"
    PLUG_MODE_BOTH: Final = (PLUG_MODE_CLIENT, PLUG_MODE_COMPONENT)

    # trigger priorities: the bounds keep room for "first" and "last" callbacks
    TRIGGER_PRIORITY_MIN: Final = -1000
    TRIGGER_PRIORITY_MAX: Final = 1000

    LOG_LEVELS: Final = ("debug", "info", "warn", "error", "critical")
