"""Plugin manager, entry-point discovery and component lookups.

Plugins are modules (or objects) implementing hooks from
:mod:`tokzoo.hookspecs`. Core registers its own built-ins the same way
(the modules of :data:`DEFAULT_PLUGINS`); third parties, and the first-party SemHiTok and
baselines distributions, are found through the ``tokzoo`` entry-point group.

``TOKZOO_PLUGINS`` restricts which entry-point plugins load: a comma list of
entry-point or distribution names, or ``none``. Core built-ins always load.
"""
from __future__ import annotations

import dataclasses

import importlib.metadata as md
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pluggy

from tokzoo import hookspecs
from tokzoo.errors import PluginError, UnknownNameError, closest
from tokzoo.pretrained import building, current_frame
from tokzoo.component import LAZY, Component, one_line as _one_line
from tokzoo.schema import to_container, validate_params

ENTRY_POINT_GROUP = "tokzoo"
KINDS = hookspecs.KINDS
CORE = "tokzoo"
#: core's own components, each module registered like any plugin (datasette's DEFAULT_PLUGINS)
DEFAULT_PLUGINS = ("tokzoo.builtins", "tokzoo.configs")


@dataclass
class PluginInfo:
    """What ``tokzoo plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None  # one-line reason when the plugin failed to load
    warnings: list[str] = field(default_factory=list)  # e.g. a misspelled hook name

    @property
    def ok(self) -> bool:
        return self.error is None


class Registry:
    """Holds every registered component, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager | None = None):
        self.pm = pm or pluggy.PluginManager("tokzoo")
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        self.preset_dirs: list[tuple[str, Path, str]] = []  # (name, folder, distribution)
        self.plugins: dict[str, PluginInfo] = {}
        self._dist_of: dict[str, tuple[str, str]] = {}  # plugin name -> (dist, version)

    # -- loading -----------------------------------------------------------
    def add_plugin(self, plugin: Any, name: str, distribution: str, version: str) -> None:
        """Register a plugin object or module under ``name`` and collect its components."""
        self.pm.register(plugin, name=name)
        self._dist_of[name] = (distribution, version)
        info = PluginInfo(name=name, distribution=distribution, version=version)
        self.plugins[name] = info
        info.hooks = sorted(
            impl.name for impl in self.pm.get_hookcallers(plugin) or []
        )
        for attr in sorted(a for a in dir(plugin) if a.startswith("tokzoo_") and a not in hookspecs.HOOK_KINDS):
            hint = closest(attr, hookspecs.HOOK_KINDS)
            info.warnings.append(f"'{attr}' is not a tokzoo hook and registers nothing"
                                 + (f"; did you mean '{hint}'?" if hint else ""))
        unmarked = sorted(a for a in dir(plugin) if a in hookspecs.HOOK_KINDS and a not in info.hooks
                          and callable(getattr(plugin, a, None)))
        if unmarked:  # pluggy calls only functions marked as hook implementations
            info.warnings.append(f"{', '.join(repr(a) for a in unmarked)} {'is' if len(unmarked) == 1 else 'are'} "
                                 "not marked @tokzoo.hookimpl and register nothing; add the decorator")
        try:
            self._collect(plugin, name)
            for plugin_name, folder, _ in self.preset_dirs:
                if plugin_name == name and not (folder.is_dir() and any(folder.rglob("*.yaml"))):
                    info.warnings.append(f"lists presets in {folder}, but no preset file is there: is package-data "
                                         "set in its pyproject.toml (e.g. [tool.setuptools.package-data] "
                                         "PKG = [\"configs/*.yaml\"])?")
        except BaseException as exc:  # a plugin whose hook raises (or clashes) is shown as failed, alone
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.pm.unregister(plugin)
            self._drop(name)
            info.error = str(exc) if isinstance(exc, PluginError) else f"hook failed: {_one_line(exc)}"

    def add_failed(self, name: str, distribution: str, version: str, exc: BaseException) -> None:
        self.plugins[name] = PluginInfo(name, distribution, version, error=_one_line(exc))

    def remove_plugin(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self._drop(name)
        self.plugins.pop(name, None)

    def _drop(self, plugin_name: str) -> None:
        for table in self.components.values():
            for key in [k for k, c in table.items() if c.plugin == plugin_name]:
                del table[key]
        self.preset_dirs = [p for p in self.preset_dirs if p[0] != plugin_name]

    def _collect(self, plugin: Any, plugin_name: str) -> None:
        dist, _ = self._dist_of[plugin_name]
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if kind == "preset-dir":
                    impl.function(register=lambda _n, path, _p=plugin_name, _d=dist: self.preset_dirs.append((_p, Path(path), _d)))
                else:
                    impl.function(register=self._registrar(kind, plugin_name, dist))

    def _registrar(self, kind: str, plugin_name: str, dist: str):
        def register(name: str, factory: Callable[..., Any] | str, description: str = "", config: Any = None):
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin '{plugin_name}' registered a {kind} without a name")
            for what, value in (("factory", factory), ("config", config)):
                if isinstance(value, str) and not LAZY.fullmatch(value):
                    raise PluginError(f"plugin '{plugin_name}': the {what} of {kind} '{name}' is the string "
                                      f"{value!r}; a factory registered by name is 'package.module:attr'")
            if not isinstance(factory, str) and not callable(factory):
                raise PluginError(f"plugin '{plugin_name}': the factory of {kind} '{name}' is not callable")
            if config is not None and not isinstance(config, str) and not callable(config):
                raise PluginError(f"plugin '{plugin_name}': config for {kind} '{name}' must be a dataclass")
            table = self.components[kind]
            if name in table:
                other = table[name]
                raise PluginError(
                    f"{kind} '{name}' is already registered by distribution '{other.distribution}' "
                    f"(plugin '{other.plugin}'); distribution '{dist}' (plugin '{plugin_name}') is disabled. "
                    f"Rename its {kind}, or restrict plugins with TOKZOO_PLUGINS."
                )
            table[name] = Component(kind, name, factory, description, plugin_name, dist, config)

        return register

    # -- lookups -----------------------------------------------------------
    def list(self, kind: str | None = None) -> list[Component]:
        """Registered components of ``kind`` (all kinds when None), sorted by name."""
        kinds = [kind] if kind else list(KINDS)
        for k in kinds:
            if k not in self.components:
                raise UnknownNameError("component kind", k, KINDS)
        return [c for k in kinds for c in sorted(self.components[k].values(), key=lambda c: c.name)]

    def versions(self) -> dict[str, str]:
        """Every loaded (not failed) plugin's distribution -> version, core included."""
        return {info.distribution: info.version for info in self.plugins.values() if info.ok}

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def has(self, kind: str, name: str) -> bool:
        return name in self.components.get(kind, {})

    def get(self, kind: str, name: str) -> Component:
        if kind not in self.components:
            raise UnknownNameError("component kind", kind, KINDS)
        try:
            return self.components[kind][name]
        except KeyError:
            err = UnknownNameError(kind, name, self.components[kind])
            notes = self.plugin_notes()
            if notes:  # a plugin that meant to register it, and why it did not
                err.args = (err.args[0] + "\n" + notes,)
            raise err from None

    def plugin_notes(self) -> str:
        """Every plugin's warnings (and failures), one line each: what may explain a name not found."""
        lines = [f"note: plugin '{i.name}' ({i.distribution} {i.version}) {w}" for i in self.plugins.values()
                 for w in i.warnings]
        lines += [f"note: plugin '{i.name}' ({i.distribution} {i.version}) failed to load: {i.error}"
                  for i in self.plugins.values() if i.error]
        return "\n".join(lines)

    def create(self, kind: str, name: str, /, **params: Any) -> Any:
        """Build component ``name`` of ``kind`` after validating ``params``."""
        comp = self.get(kind, name)
        host: dict[str, Any] = {}
        if kind == "dataset":  # what the host passes every dataset beside its declared parameters
            declared = {f.name for f in dataclasses.fields(comp.config)} if comp.config is not None else set()
            host = {k: params.pop(k) for k in ("split", "resolution") if k in params and k not in declared}
        if comp.config is not None:
            params = validate_params(params, comp.config, where=f"{kind} '{name}'")
        params = {**params, **host}
        path = current_frame()[0] or ("model" if kind in ("tokenizer", "encoder") else kind)
        with building(path, params):
            try:
                obj = comp.factory(**params)
            except (ValueError, ZeroDivisionError) as exc:  # a value the component cannot be built with
                from tokzoo.errors import ConfigError, TokzooError

                if isinstance(exc, TokzooError):
                    raise
                given = ", ".join(f"{k}={v!r}" for k, v in params.items() if not isinstance(v, (dict, list)))
                raise ConfigError(f"{kind} '{name}' at '{path}' cannot be built with {given or 'its parameters'}: "
                                  f"{type(exc).__name__}: {exc}") from exc
            except TypeError as exc:  # a plugin class that leaves a method of the contract unwritten
                if "abstract" not in str(exc):
                    raise
                from tokzoo.errors import ContractError

                dist, version = self._dist_of.get(comp.plugin, (comp.distribution, "?"))
                raise ContractError(f"{kind} '{name}' (plugin '{comp.plugin}', distribution '{dist} {version}') "
                                    f"cannot be built: {exc} (tokzoo.api declares it: write it, see "
                                    "docs/plugins.md)") from None
        try:  # provenance: which distribution built this (results.json records it)
            dist, version = self._dist_of.get(comp.plugin, (comp.distribution, "?"))
            obj.tokzoo_component = {"kind": kind, "name": name, "plugin": comp.plugin, "distribution": dist,
                                    "version": version}
        except (AttributeError, TypeError):
            pass
        return obj

    def build(self, kind: str, spec: Any, where: str | None = None) -> Any:
        """Build a component from a spec: a name, or a mapping ``{name: ..., **params}``.

        ``where`` is the spec's config path (``model``, ``data``); a component
        built inside another's factory gets its parent's path plus the key of
        the parameter that held its spec (``model.teacher``)."""
        path = where if where is not None else _child_path(spec)
        with building(path, None):
            if isinstance(spec, str):
                return self.create(kind, spec)
            spec = dict(to_container(spec))
            if "name" not in spec:
                from tokzoo.errors import ConfigError

                raise ConfigError(f"a {kind} spec needs a 'name' key (got keys: {sorted(spec)})")
            name = spec.pop("name")
            return self.create(kind, name, **spec)


def _child_path(spec: Any) -> str:
    """A nested build's config path: its parent's path plus the key of the parameter holding its spec."""
    parent, params = current_frame()
    if params:
        plain = to_container(spec)
        for key, value in params.items():
            if value is spec or to_container(value) == plain:
                return f"{parent}.{key}"
    return parent


# -- the process-wide registry -------------------------------------------------
_lock = threading.Lock()
_registry: Registry | None = None


def _allowed() -> set[str] | None:
    raw = os.environ.get("TOKZOO_PLUGINS")
    if raw is None or raw.strip() == "":
        return None
    if raw.strip().lower() == "none":
        return set()
    return {p.strip() for p in raw.split(",") if p.strip()}


def load_registry(exclude: Any = None) -> Registry:
    """Build a fresh registry: core built-ins, then every allowed entry point
    (except one that loads the object ``exclude``: a plugin under test)."""
    import importlib

    version = md.version(CORE)  # the installed distribution's, as every plugin's is read
    reg = Registry()
    for module in DEFAULT_PLUGINS:
        reg.add_plugin(importlib.import_module(module), module, CORE, version)
    allowed = _allowed()
    eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    if allowed:
        known = {ep.name for ep in eps} | {ep.dist.name for ep in eps if ep.dist is not None}
        unknown = sorted(allowed - known)
        if unknown:
            raise PluginError(f"TOKZOO_PLUGINS names {', '.join(repr(u) for u in unknown)}, which is not installed. "
                              f"Installed plugins: {', '.join(sorted(known)) or '(none)'}; or TOKZOO_PLUGINS=none")
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        if ep.name in reg.plugins:
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = ep.load()
        except BaseException as exc:  # SystemExit at import too: that plugin fails, not tokzoo
            if isinstance(exc, KeyboardInterrupt):
                raise
            reg.add_failed(ep.name, dist, version, exc)
            continue
        if exclude is not None and plugin is exclude:
            continue
        reg.add_plugin(plugin, ep.name, dist, version)
    return reg


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = load_registry()
        return _registry


def reset_registry() -> None:
    """Forget the loaded registry (tests, or after installing a plugin)."""
    global _registry
    with _lock:
        _registry = None


def create(kind: str, name: str, /, **params: Any) -> Any:
    return get_registry().create(kind, name, **params)


def build(kind: str, spec: Any, where: str | None = None) -> Any:
    return get_registry().build(kind, spec, where)
