"""``tokzoo show NAME``: what a component or preset takes, from the one place
each is declared: a component's parameters (name, type, default, and the
comment written beside it in its signature or config dataclass) from its
registered schema, a preset's resolved config from its YAML chain."""
from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any

from tokzoo.errors import UnknownNameError


def comments_of(obj: Any) -> dict[str, str]:
    """Parameter name -> the ``# comment`` at the end of its line in ``obj``'s source
    (a dataclass's fields, its bases' too, or a function's / class ``__init__``'s parameters)."""
    if dataclasses.is_dataclass(obj) and inspect.isclass(obj):
        out: dict[str, str] = {}
        for base in obj.__mro__:
            if dataclasses.is_dataclass(base):
                for k, v in _comments(base).items():
                    out.setdefault(k, v)
        return out
    return _comments(obj.__init__ if inspect.isclass(obj) else obj)


def _comments(target: Any) -> dict[str, str]:
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    names: list[str] = []  # the names met on the current line
    depth = 0  # inside the def's parentheses, or at the class body's top level
    try:
        for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
            elif tok.type == tokenize.NAME and depth <= 1:
                names.append(tok.string)
            elif tok.type == tokenize.COMMENT and names:
                # the help, before or after a tool's directive (`# help  # noqa: B006`, `# noqa: B006  # help`)
                parts = [s.strip() for s in tok.string.split("#")]
                text = " ".join(s for s in parts if s and not s.startswith(("noqa", "type:", "pragma")))
                if text:
                    out.setdefault(_param_name(names), text)
            if tok.type in (tokenize.NL, tokenize.NEWLINE):
                names = []
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def _param_name(names: list[str]) -> str:
    skip = {"def", "self", "class", "__init__", "int", "float", "str", "bool", "list", "dict", "tuple", "None",
            "Any", "Spec", "field", "lambda"}
    if names[:1] == ["def"]:  # `def factory(a: int = 0,  # help`: the first parameter, not the function
        names = names[2:]
    return next((n for n in names if n not in skip), "")


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any"
    if isinstance(tp, type):
        return tp.__name__
    text = str(tp).replace("typing.", "")
    return text.replace("Optional[", "").rstrip("]") + " | None" if text.startswith("Optional[") else text


def params_of(comp) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of each parameter of a registered component."""
    schema = comp.config
    if schema is None:
        return []
    nested = getattr(schema, "__nested_specs__", {}) or {}
    helps = comments_of(comp.factory if comp.schema_source == "signature" else schema)
    hints = typing.get_type_hints(schema) if hasattr(schema, "__annotations__") else {}
    rows = []
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            default = "(required)" if f.default == "???" else repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        kind = f"{'an' if nested[f.name][0] in 'aeiou' else 'a'} {nested[f.name]} spec" if f.name in nested else _type_name(hints.get(f.name, f.type))
        rows.append((f.name, kind, default, helps.get(f.name, "")))
    return rows


def describe(name: str, kind: str | None = None) -> tuple[list[Any], dict[str, Any] | None]:
    """(the components named ``name``, of ``kind`` when given; the preset's resolved config
    or None). Neither: an UnknownNameError with close matches over every name."""
    from tokzoo.config import list_presets, load_run_config
    from tokzoo.registry import KINDS, get_registry

    reg = get_registry()
    kinds = [kind] if kind else list(KINDS)
    if kind is not None and kind not in KINDS and kind != "preset":
        raise UnknownNameError("component kind", kind, [*KINDS, "preset"])
    comps = [c for k in kinds if k in KINDS for c in reg.list(k) if c.name == name]
    preset = load_run_config(name) if kind in (None, "preset") and name in list_presets() else None
    if not comps and preset is None:  # the names of the kind asked for: never "did you mean" the name itself
        every = set(list_presets()) if kind == "preset" else {c.name for k in kinds if k in KINDS
                                                              for c in reg.list(k)}
        if kind is None:
            every |= set(list_presets())
        err = UnknownNameError(kind or "component or preset", name, every)
        others = sorted({c.kind for c in reg.list() if c.name == name} | ({"preset"} if name in list_presets()
                                                                           else set()))
        if others:
            err.args = (err.args[0] + f"\n'{name}' is a {' and a '.join(others)}: tokzoo show {name} "
                        f"--kind {others[0]}",)
        raise err
    return comps, preset
