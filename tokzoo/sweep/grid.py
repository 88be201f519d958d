"""A sweep's grid: the command line's ``[alias:]key=a,b,c`` words -> axes and
fixed overrides -> one point per combination, each with its folder name."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tokzoo.errors import ConfigError
from tokzoo.textsafe import NUMBER


@dataclass
class Axis:
    alias: str
    key: str
    values: list[str]


@dataclass
class Point:
    name: str
    values: dict[str, Any]  # alias -> value (parsed as YAML: 4 -> int)
    overrides: list[str]  # key=value, one per axis
    run_dir: Path = field(default=Path())


def split_values(text: str) -> list[str]:
    """``"a,b,[1,2]"`` -> ``["a", "b", "[1,2]"]``: commas inside brackets or braces stay."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_grid(args: list[str]) -> tuple[list[Axis], list[str]]:
    """Command-line ``key=...`` words -> (swept axes, fixed overrides)."""
    axes, fixed = [], []
    for word in args:
        if "=" not in word:
            raise ConfigError(f"'{word}' is not key=value or key=a,b,c (e.g. model.sub_codebook_size=4,8)")
        key, text = word.split("=", 1)
        values = split_values(text)
        alias, _, real = key.rpartition(":")
        alias, key = (alias or real.rsplit(".", 1)[-1]), real
        if not key or any(v == "" for v in values):
            raise ConfigError(f"'{word}': an empty key or value")
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
            continue
        if len(set(values)) != len(values):
            raise ConfigError(f"'{word}' names a value twice")
        if alias in {a.alias for a in axes}:
            raise ConfigError(f"two swept keys are both called '{alias}': give one an alias (alias:{key}=...)")
        axes.append(Axis(alias, key, values))
    if not axes:
        raise ConfigError("nothing to sweep: give at least one key with two or more values, e.g. "
                          "model.sub_codebook_size=4,8,16")
    return axes, fixed


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=._-]+", "", text.replace("/", "-"))[:60] or "x"


def grid_points(axes: list[Axis]) -> list[Point]:
    points, seen = [], set()
    for combo in itertools.product(*[a.values for a in axes]):
        name = ",".join(_safe(f"{a.alias}={v}") for a, v in zip(axes, combo))
        if name in seen:
            name = f"{name},{len(points)}"
        seen.add(name)
        values = {a.alias: _yaml_value(v) for a, v in zip(axes, combo)}
        points.append(Point(name, values, [f"{a.key}={v}" for a, v in zip(axes, combo)]))
    return points


def _yaml_value(text: str) -> Any:
    """A swept value with its type: numbers (``5e-4`` included) sort as numbers in every output."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):  # 5e-4: text to YAML 1.1, a number
        return float(value)
    return value if isinstance(value, (int, float, str, bool, list)) else text
