"""Component parameter schemas: derived from each factory's signature, checked
before anything is built.

A leaf: it imports no other tokzoo module but :mod:`tokzoo.errors` and
:mod:`tokzoo.hookspecs` (the component kinds), so the registry and the config
loader both build on it.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import types
import re
import typing
from dataclasses import field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tokzoo.errors import ConfigError, closest
from tokzoo.hookspecs import KINDS

__all__ = ["HOST_PARAMS", "KINDS", "Spec", "check_keys", "schema_of", "to_container", "validate_params"]


class Spec:
    """Annotation of a parameter that holds another component's spec, by kind:
    ``teacher: Spec.encoder = {"name": "semantic-teacher"}``. Its value is a
    ``{name: ..., **params}`` mapping (or a name), validated against that
    component's own schema."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"Spec.{self.kind}"


for _kind in KINDS:
    setattr(Spec, _kind, Spec(_kind))


#: parameters the host passes itself (never part of a component's schema)
HOST_PARAMS = ("split",)


def schema_of(factory: Any, name: str = "") -> type:
    """A component's parameter schema, derived from its factory's signature:
    one source of truth for names, types and defaults. Parameters annotated
    :class:`Spec` are nested component specs; list/tuple defaults become lists;
    a parameter without a default is required."""
    import inspect

    target = factory.__init__ if inspect.isclass(factory) else factory
    sig = inspect.signature(target) if target is not object.__init__ else inspect.Signature()  # no parameters
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        raise TypeError(f"{factory} takes **kwargs: its parameters cannot be read from its signature "
                        "(give config=DataclassOfParams, or a config_class attribute)")
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve: no type checking for it
        hints = {}
    fields, nested = [], {}
    for pname, p in sig.parameters.items():
        if pname == "self" or pname in HOST_PARAMS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation
        if isinstance(ann, str):  # postponed annotations: Spec("...") is evaluated here
            try:
                ann = eval(ann, getattr(target, "__globals__", {}), {"Spec": Spec})
            except Exception:
                ann = hints.get(pname, Any)
        if isinstance(ann, Spec):
            nested[pname] = ann.kind
            ann = Any
        elif pname in hints:
            ann = hints[pname]
        else:
            ann = Any
        ann = _structured_type(ann)
        default = p.default
        if default is p.empty:
            fields.append((pname, ann, field(default="???")))
        elif isinstance(default, (list, tuple)):
            if ann is Any or typing.get_origin(ann) not in (list,):
                ann = list[Any] if ann is Any else ann
            fields.append((pname, ann, field(default_factory=lambda d=default: list(d))))
        elif isinstance(default, dict):
            fields.append((pname, ann, field(default_factory=lambda d=default: dict(d))))
        else:
            fields.append((pname, ann, field(default=default)))
    cls = dataclasses.make_dataclass(f"{name or getattr(factory, '__name__', 'Component')}Params", fields)
    cls.__nested_specs__ = nested
    return cls


def _structured_type(ann: Any) -> Any:
    """Map an annotation to one OmegaConf's structured configs accept."""
    origin = typing.get_origin(ann)
    if ann in (int, float, bool, str) or ann is Any:
        return ann
    if origin in (tuple, list, collections.abc.Sequence) or ann in (list, tuple):
        args = [a for a in typing.get_args(ann) if a is not Ellipsis]
        inner = args[0] if args and args[0] in (int, float, bool, str) else Any
        return list[inner]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1 and args[0] in (int, float, bool, str):
            return typing.Optional[args[0]]
    return Any


def _literal(value: Any) -> Any:
    """Strings with ``${`` escaped for OmegaConf (``\\${``), in any nesting: the
    structured merge keeps them text (or refuses them where a number is due)."""
    if isinstance(value, str):
        return value.replace("\\${", "\\\\${").replace("${", "\\${") if "${" in value else value
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_literal(v) for v in value)
    return value


def to_container(obj: Any) -> Any:
    """OmegaConf objects -> plain dicts and lists (anything else unchanged).
    Never resolved: configs are plain data, ``${...}`` in a value (a path, an
    override) stays the text it is, no resolver (``oc.env``) ever runs."""
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=False)
    return obj


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}


def check_keys(data: Any, schema: type, where: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``data`` not in ``schema``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    types = _field_types(schema)
    for key, value in data.items():
        if key not in types:
            hint = closest(str(key), types)
            msg = f"unknown config key '{where}.{key}'" if where else f"unknown config key '{key}'"
            msg += f": did you mean '{hint}'?" if hint else "."
            msg += f" Valid keys here: {', '.join(sorted(types))}"
            err = ConfigError(msg)
            err.key_path = f"{where}.{key}" if where else str(key)  # where it came from can be looked up
            raise err
        sub = types[key]
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            check_keys(value, sub, f"{where}.{key}" if where else str(key))


def validate_params(params: dict[str, Any], schema: type, where: str = "") -> dict[str, Any]:
    """Check ``params`` against dataclass ``schema``; return them with defaults filled in."""
    params = to_container(params) or {}
    try:
        check_keys(params, schema, "")
    except ConfigError as exc:
        err = ConfigError(f"{where}: {exc}" if where else str(exc))
        prefix = where.split(" ")[0] if where else ""  # "model.quantizer (quantizer 'vq')": the path first
        err.key_path = ".".join(p for p in (prefix, getattr(exc, "key_path", "")) if p)
        raise err from None
    types = _field_types(schema)
    params = {k: ("" if v is None and types.get(k) is str else v) for k, v in params.items()}  # `key=` on a str
    # a nested component spec given replaces the default spec whole (never merged into it:
    # the default teacher's `arch` must not leak into a teacher spec that did not set one)
    nested = {k: params.pop(k) for k in list(params) if k in getattr(schema, "__nested_specs__", {})}
    params, nested = _literal(params), _literal(nested)  # "${...}" is text: OmegaConf never resolves it
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), params)
        for k, v in nested.items():
            merged[k] = v
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: bad value for '{key}': {reason}" if where else f"bad value for '{key}': {reason}") from None
    try:  # resolving only undoes the escapes of _literal: the text given
        out = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        reason = re.sub(r"^While dereferencing interpolation '.*?': ", "", str(exc).splitlines()[0]).replace("\\${", "${")
        raise ConfigError(f"{where}: bad value for '{key}': {reason}" if where else f"bad value for '{key}': {reason}") from None
    missing = [k for k, v in out.items() if v == "???"]
    if missing:
        raise ConfigError(f"{where}: missing required value for '{missing[0]}'")
    return out
