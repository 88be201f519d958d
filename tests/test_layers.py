"""Layers point one way (imports read with ast, function-level imports included)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "tokzoo"


def imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if m == "tokzoo" or m.startswith("tokzoo.")}


def files(sub: str) -> list[Path]:
    p = PKG / sub
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


RULES = [
    # (files, forbidden import prefixes, why)
    ("nn", ("tokzoo.train", "tokzoo.bench"), "networks know nothing of training or benchmarking"),
    ("bench", ("tokzoo.train.trainer",), "the harness shares device helpers (tokzoo.device), not the trainer"),
    ("data", ("tokzoo.train", "tokzoo.bench", "tokzoo.nn"), "data is below models"),
    ("ckptio.py", ("tokzoo.api", "tokzoo.config", "tokzoo.registry", "tokzoo.nn", "tokzoo.train", "tokzoo.bench",
                   "tokzoo.data", "tokzoo.pretrained", "tokzoo.weights", "tokzoo.device"),
     "checkpoint file I/O imports no other tokzoo module but tokzoo.errors"),
    ("config.py", ("tokzoo.nn", "tokzoo.train", "tokzoo.bench", "tokzoo.data"), "a lower floor"),
    ("registry.py", ("tokzoo.nn", "tokzoo.train", "tokzoo.bench", "tokzoo.data"),
     "core registers its components from DEFAULT_PLUGINS, by module name"),
    ("api.py", ("tokzoo.nn", "tokzoo.train", "tokzoo.bench", "tokzoo.data"), "the contract is a lower floor"),
]


@pytest.mark.parametrize("where,forbidden,why", RULES)
def test_layers_point_one_way(where, forbidden, why):
    bad = [f"{f.relative_to(PKG)} imports {m}" for f in files(where) for m in imports_of(f)
           if m.startswith(forbidden)]
    assert not bad, f"{why}: " + "; ".join(bad)


def test_no_plugin_imports_private_tokzoo_modules():
    """First-party plugins use only what docs/plugins.md lists as public."""
    public = ("tokzoo", "tokzoo.api", "tokzoo.nn", "tokzoo.data", "tokzoo.train", "tokzoo.train.losses",
              "tokzoo.train.recipes",
              "tokzoo.registry", "tokzoo.config", "tokzoo.errors", "tokzoo.testing")
    root = PKG.parent / "plugins"
    bad = [f"{f.relative_to(root)}: {m}" for f in sorted(root.rglob("*.py")) for m in imports_of(f) if m not in public]
    assert not bad, bad
