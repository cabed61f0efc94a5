"""Plugin discovery and loading.

Plugins are found through the entry point group ``libervia.backend.plugins`` (the
backend's own plugins are registered there exactly like third-party ones).  An entry
point is named after the plugin's import name and points to the plugin's module::

    [project.entry-points."libervia.backend.plugins"]
    XEP-0060 = "libervia.backend.plugins.xep_0060"

The module declares ``PLUGIN_INFO``, a dict of data describing the plugin (see
:class:`PluginInfo`), and the class named by ``PLUGIN_INFO["main"]``, which is
instantiated with the host (``Main(host)``, see
:class:`~libervia.backend.core.interfaces.Host`).  If the instance implements
:class:`~libervia.backend.core.interfaces.AsyncInit` (plain, coroutine or returning a
Deferred), its ``async_init`` is awaited before the next plugin is loaded.

Loading rules:

* a plugin listed in ``plugins_disabled`` is not even imported;
* plugins are loaded in dependency order; recommendations, when present, are loaded
  first too;
* a missing (or failed) dependency skips the plugin and, in turn, its dependents, with a
  log line saying which dependency is missing; a missing recommendation only warns;
* an exception while importing or initialising a plugin is logged with its traceback,
  and the backend goes on without that plugin (and its dependents);
* two entry points with the same import name are refused: if one of them comes from the
  backend's own distribution it is kept, otherwise none is loaded, since there is no way
  to tell which one is wanted.
"""

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from types import ModuleType
from typing import Any

from twisted.python.failure import Failure

from libervia.backend.core.async_utils import maybe_async_call
from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import PluginError
from libervia.backend.core.interfaces import AsyncInit, Host, Reactor
from libervia.backend.core.log import getLogger

log = getLogger(__name__)

#: seconds a plugin's async_init may take before it is considered failed
DEFAULT_INIT_TIMEOUT = 60.0


class PluginState(Enum):
    LOADED = "loaded"
    DISABLED = "disabled"
    SKIPPED = "skipped"  # a dependency is missing
    FAILED = "failed"  # raised while importing or initialising
    REFUSED = "refused"  # invalid PLUGIN_INFO, duplicate, dependency cycle


def _str_list(info: dict[str, Any], key: str) -> list[str]:
    value = info.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise PluginError(f"PLUGIN_INFO[{key!r}] must be a list of strings")
    return list(value)


@dataclass(frozen=True)
class PluginInfo:
    """Validated content of a module's ``PLUGIN_INFO``."""

    name: str
    import_name: str
    type: str
    main: str
    description: str = ""
    modes: tuple[str, ...] = C.PLUG_MODE_BOTH
    protocols: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    recommendations: tuple[str, ...] = ()
    handler: bool = False
    #: service discovery features the plugin brings (announced while it is loaded)
    features: tuple[str, ...] = ()
    #: PEP nodes whose notifications the plugin wants (XEP-0163: announced as
    #: ``NODE+notify``)
    notify: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, info: Any) -> "PluginInfo":
        """Validate a ``PLUGIN_INFO`` dict.

        :raise PluginError: a required key is missing or a value has the wrong type
        """
        if not isinstance(info, dict):
            raise PluginError("PLUGIN_INFO must be a dict")
        for key in ("name", "import_name", "type", "main"):
            if not isinstance(info.get(key), str) or not info[key].strip():
                raise PluginError(f"PLUGIN_INFO[{key!r}] is required and must be a string")
        modes = _str_list(info, "modes") or list(C.PLUG_MODE_BOTH)
        for mode in modes:
            if mode not in C.PLUG_MODE_BOTH:
                raise PluginError(
                    f"PLUGIN_INFO['modes'] has unknown mode {mode!r} "
                    f"(known: {', '.join(C.PLUG_MODE_BOTH)})"
                )
        handler = info.get("handler", False)
        if isinstance(handler, str):  # Libervia's historical "yes"/"no"
            if handler not in ("yes", "no"):
                raise PluginError("PLUGIN_INFO['handler'] must be a boolean")
            handler = handler == "yes"
        if not isinstance(handler, bool):
            raise PluginError("PLUGIN_INFO['handler'] must be a boolean")
        description = info.get("description", "")
        if not isinstance(description, str):
            raise PluginError("PLUGIN_INFO['description'] must be a string")
        return cls(
            name=info["name"],
            import_name=info["import_name"],
            type=info["type"],
            main=info["main"],
            description=description.strip(),
            modes=tuple(modes),
            protocols=tuple(_str_list(info, "protocols")),
            dependencies=tuple(_str_list(info, "dependencies")),
            recommendations=tuple(_str_list(info, "recommendations")),
            handler=handler,
            features=tuple(_str_list(info, "features")),
            notify=tuple(_str_list(info, "notify")),
        )


@dataclass
class PluginRecord:
    """What the loader knows of one plugin: where it comes from and what became of it."""

    import_name: str
    entry_point: str
    distribution: str | None
    version: str | None
    state: PluginState | None = None
    reason: str = ""
    info: PluginInfo | None = None
    #: the plugin's module, once imported
    module: ModuleType | None = None
    #: the plugin's main class instance, once loaded
    instance: object | None = None
    failure: Failure | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain description, for the API and the logs."""
        info = self.info
        return {
            "import_name": self.import_name,
            "name": info.name if info else None,
            "type": info.type if info else None,
            "description": info.description if info else "",
            "protocols": list(info.protocols) if info else [],
            "dependencies": list(info.dependencies) if info else [],
            "recommendations": list(info.recommendations) if info else [],
            "features": list(info.features) if info else [],
            "notify": list(info.notify) if info else [],
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "state": self.state.value if self.state else None,
            "reason": self.reason,
        }


def _type_rank(info: PluginInfo | None) -> int:
    if info is not None and info.type in C.PLUG_TYPES:
        return C.PLUG_TYPES.index(info.type)
    return len(C.PLUG_TYPES)


class PluginManager:
    """Discover, order and load the plugins.

    :param host: object given to each plugin's main class
    :param disabled: import names not to load
    :param entry_points: entry points to use instead of the installed ones (tests)
    """

    def __init__(
        self,
        host: Host,
        disabled: Iterable[str] = (),
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        reactor: Reactor | None = None,
    ) -> None:
        self.host = host
        self.disabled = frozenset(disabled)
        self._entry_points = entry_points
        self.init_timeout = init_timeout
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        #: every plugin met, by import name, in loading order once load_all ran
        self.records: dict[str, PluginRecord] = {}
        #: instances of the loaded plugins, by import name (each of its own class, which
        #: callers know from the import name: hence ``Any``)
        self.plugins: dict[str, Any] = {}

    def _find_entry_points(self) -> list[importlib.metadata.EntryPoint]:
        if self._entry_points is not None:
            return list(self._entry_points)
        return list(importlib.metadata.entry_points(group=C.PLUGINS_ENTRY_POINT_GROUP))

    def _discover(self) -> list[PluginRecord]:
        """Import the enabled plugins and validate their PLUGIN_INFO."""
        by_name: dict[str, list[tuple[PluginRecord, importlib.metadata.EntryPoint]]] = {}
        # a distribution's metadata is parsed at each read: once for all its plugins
        described: dict[int, tuple[str | None, str | None]] = {}
        for ep in self._find_entry_points():
            dist = getattr(ep, "dist", None)
            if dist is None:
                name = version = None
            else:
                if id(dist) not in described:
                    described[id(dist)] = (dist.metadata["Name"], dist.version)
                name, version = described[id(dist)]
            record = PluginRecord(
                import_name=ep.name,
                entry_point=ep.value,
                distribution=name,
                version=version,
            )
            by_name.setdefault(ep.name, []).append((record, ep))

        records = []
        for import_name, candidates in sorted(by_name.items()):
            if len(candidates) > 1:
                candidates = self._resolve_duplicates(import_name, candidates)
                if not candidates:
                    continue
            record, ep = candidates[0]
            if import_name in self.disabled:
                record.state = PluginState.DISABLED
                record.reason = "disabled in the configuration (plugins_disabled)"
                self.records[import_name] = record
                log.info("plugin {name} is disabled by configuration", name=import_name)
                continue
            try:
                module = ep.load()
            except Exception:
                self._set_failed(record, "import failed", Failure())
                continue
            try:
                info = PluginInfo.from_dict(getattr(module, "PLUGIN_INFO", None))
                if info.import_name != import_name:
                    raise PluginError(
                        f"entry point name {import_name!r} differs from "
                        f"PLUGIN_INFO['import_name'] {info.import_name!r}: they must be "
                        "equal"
                    )
                if not isinstance(getattr(module, info.main, None), type):
                    raise PluginError(
                        f"PLUGIN_INFO['main'] names {info.main!r}, which is not a class "
                        f"of {ep.value}"
                    )
            except PluginError as e:
                self._set_refused(record, str(e))
                continue
            record.module = module
            record.info = info
            records.append(record)
        return records

    def _resolve_duplicates(
        self,
        import_name: str,
        candidates: list[tuple[PluginRecord, importlib.metadata.EntryPoint]],
    ) -> list[tuple[PluginRecord, importlib.metadata.EntryPoint]]:
        origins = ", ".join(
            f"{r.entry_point} from {r.distribution or 'an unknown distribution'}"
            for r, __ in candidates
        )
        own = [(r, ep) for r, ep in candidates if r.distribution == C.DISTRIBUTION]
        if len(own) == 1:
            log.error(
                "several plugins use the import name {name} ({origins}); keeping the "
                "backend's own and refusing the others",
                name=import_name, origins=origins,
            )
            return own
        log.error(
            "several plugins use the import name {name} ({origins}); none of them is "
            "loaded: uninstall or disable the unwanted one",
            name=import_name, origins=origins,
        )
        record = candidates[0][0]
        record.state = PluginState.REFUSED
        record.reason = f"duplicate import name ({origins})"
        self.records[import_name] = record
        return []

    def _set_failed(self, record: PluginRecord, what: str, failure: Failure) -> None:
        record.state = PluginState.FAILED
        record.reason = f"{what}: {failure.getErrorMessage()}"
        record.failure = failure
        self.records[record.import_name] = record
        log.failure(
            "plugin {name} ({entry_point}): {what}; the backend goes on without it",
            failure, name=record.import_name, entry_point=record.entry_point, what=what,
        )

    def _set_refused(self, record: PluginRecord, reason: str) -> None:
        record.state = PluginState.REFUSED
        record.reason = reason
        self.records[record.import_name] = record
        log.error("plugin {name} refused: {reason}", name=record.import_name, reason=reason)

    @staticmethod
    def order(records: list[PluginRecord]) -> tuple[list[PluginRecord], list[PluginRecord]]:
        """Sort plugins so that dependencies (and present recommendations) come first.

        :return: (ordered records, records caught in a dependency cycle)
        """
        by_name = {r.import_name: r for r in records}
        edges: dict[str, set[str]] = {}
        for record in records:
            assert record.info is not None
            wanted = (*record.info.dependencies, *record.info.recommendations)
            edges[record.import_name] = {w for w in wanted if w in by_name}
        ordered: list[PluginRecord] = []
        placed: set[str] = set()
        remaining = dict(edges)
        while remaining:
            ready = [n for n, deps in remaining.items() if deps <= placed]
            if not ready:
                break
            ready.sort(key=lambda n: (_type_rank(by_name[n].info), n))
            for name in ready:
                ordered.append(by_name[name])
                placed.add(name)
                del remaining[name]
        return ordered, [by_name[n] for n in sorted(remaining)]

    async def load_all(self) -> dict[str, Any]:
        """Discover and load every plugin; never raises for a plugin's fault.

        :return: the loaded plugin instances by import name
        """
        candidates = self._discover()
        ordered, cyclic = self.order(candidates)
        for record in cyclic:
            assert record.info is not None
            in_cycle = [d for d in record.info.dependencies if d in {r.import_name for r in cyclic}]
            self._set_refused(
                record, f"dependency cycle involving {', '.join(in_cycle) or 'recommendations'}"
            )
        for record in ordered:
            await self._load(record)
        self._log_summary()
        return self.plugins

    async def _load(self, record: PluginRecord) -> None:
        info = record.info
        assert info is not None
        for dependency in info.dependencies:
            if dependency not in self.plugins:
                dep_record = self.records.get(dependency)
                why = (
                    f"{dep_record.state.value}" if dep_record and dep_record.state
                    else "not installed"
                )
                record.state = PluginState.SKIPPED
                record.reason = f"missing dependency {dependency} ({why})"
                self.records[record.import_name] = record
                log.warn(
                    "plugin {name} skipped: it depends on {dependency}, which is {why}",
                    name=info.import_name, dependency=dependency, why=why,
                )
                return
        for recommendation in info.recommendations:
            if recommendation not in self.plugins:
                log.warn(
                    "plugin {name} recommends {recommendation}, which is not loaded: "
                    "some features will be missing",
                    name=info.import_name, recommendation=recommendation,
                )
        main_class = getattr(record.module, info.main)
        try:
            instance = main_class(self.host)
            if isinstance(instance, AsyncInit):
                d = maybe_async_call(instance.async_init)
                d.addTimeout(self.init_timeout, self.reactor)
                await d
        except Exception:
            self._set_failed(record, "initialisation failed", Failure())
            return
        record.instance = instance
        record.state = PluginState.LOADED
        self.records[record.import_name] = record
        self.plugins[record.import_name] = instance
        log.debug("plugin {name} loaded", name=info.import_name)

    def _log_summary(self) -> None:
        loaded = [r for r in self.records.values() if r.state is PluginState.LOADED]
        lines = [
            f"  {r.import_name} ({r.info.name if r.info else ''}) from "
            f"{r.distribution or '?'} {r.version or ''}".rstrip()
            for r in loaded
        ]
        log.info(
            "{count} plugin(s) loaded:\n{lines}",
            count=len(loaded), lines="\n".join(lines) or "  (none)",
        )
        others = [r for r in self.records.values() if r.state is not PluginState.LOADED]
        for r in others:
            log.info(
                "plugin {name} not loaded ({state}): {reason}",
                name=r.import_name, state=r.state.value if r.state else "?", reason=r.reason,
            )

    def report(self) -> list[dict[str, Any]]:
        """Every plugin met and what became of it (loaded ones first, in load order)."""
        records = sorted(
            self.records.values(), key=lambda r: r.state is not PluginState.LOADED
        )
        return [r.as_dict() for r in records]

    def get(self, import_name: str) -> Any:
        """Instance of a loaded plugin, or ``None``."""
        return self.plugins.get(import_name)

    def loaded_infos(self) -> list[PluginInfo]:
        """The ``PLUGIN_INFO`` of each loaded plugin, in loading order."""
        return [r.info for r in self.records.values()
                if r.state is PluginState.LOADED and r.info is not None]

