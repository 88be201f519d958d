"""One registered component (:class:`Component`): its factory and parameter
schema, either given or named ``"package.module:attr"`` and imported when
first needed, so listing components imports no plugin's backend."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from tokzoo.errors import PluginError
from tokzoo.schema import schema_of

__all__ = ["LAZY", "Component", "resolve_target"]


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


#: a factory (or config) registered by name, imported when first needed: ``"package.module:attr"``
LAZY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def resolve_target(target: str) -> Any:
    """The object ``"package.module:attr"`` names (imported now)."""
    import importlib

    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Component:
    """One registered component. Its factory (and parameter schema) may be
    registered by name (``"package.module:attr"``) and is then imported when
    first needed (building it, its parameters): listing components imports
    no plugin's backend."""

    def __init__(self, kind: str, name: str, factory: Any, description: str, plugin: str, distribution: str,
                 config: Any = None):
        self.kind, self.name = kind, name
        self.plugin = plugin  # the plugin (entry-point name, or ``tokzoo`` for core)
        self.distribution = distribution  # the distribution that ships it
        self._factory, self._description, self._config = factory, description, config
        self._schema: tuple[Any, str] | None = None

    def __repr__(self) -> str:
        return f"Component({self.kind!r}, {self.name!r}, plugin={self.plugin!r})"

    @property
    def factory(self) -> Callable[..., Any]:
        if isinstance(self._factory, str):
            self._factory = self._resolve(self._factory, "factory")
        return self._factory

    @property
    def description(self) -> str:
        """The one-line description given, else the first line of the factory's docstring."""
        return self._description or (self.factory.__doc__ or "").strip().split("\n")[0]

    @property
    def config(self) -> type | None:
        """The parameter schema (a dataclass): given, or derived from the factory's signature."""
        return self._read_schema()[0]

    @property
    def schema_source(self) -> str:
        """``dataclass`` (given by the plugin), ``signature`` (derived) or ``none``."""
        return self._read_schema()[1]

    def _read_schema(self) -> tuple[Any, str]:
        if self._schema is None:
            config = self._config
            if isinstance(config, str):
                config = self._resolve(config, "config")
            if config is not None and not dataclasses.is_dataclass(config) and callable(config):
                config = config()  # a zero-argument function returning the dataclass (computed when needed)
            if config is not None and not dataclasses.is_dataclass(config):
                raise PluginError(f"plugin '{self.plugin}': config for {self.kind} '{self.name}' must be a dataclass")
            source = "dataclass"
            factory = self.factory
            if config is None and dataclasses.is_dataclass(getattr(factory, "config_class", None)):
                config = factory.config_class  # a **params factory (and its subclasses) naming its dataclass
            if config is None:  # one source of truth: the factory's own signature
                try:
                    config, source = schema_of(factory, self.name), "signature"
                except (TypeError, ValueError):
                    config, source = None, "none"  # a factory whose signature cannot be read
            self._schema = (config, source)
        return self._schema

    def _resolve(self, target: str, what: str) -> Any:
        try:
            return resolve_target(target)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"{self.kind} '{self.name}' (plugin '{self.plugin}', distribution "
                              f"'{self.distribution}'): its {what} '{target}' cannot be imported: "
                              f"{one_line(exc)}") from None
