"""Layers point one way: import-linter keeps the floors; plugins use only the public API."""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "tokzoo"


def imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if m == "tokzoo" or m.startswith("tokzoo.")}


def test_the_floors_and_rooms_hold():
    """import-linter's contracts in pyproject.toml: the floors point one way
    (bench and train never import each other), no circle inside any room.
    A deferred import inside a function counts like any other."""
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), "--config", str(PKG.parent / "pyproject.toml"), "--no-cache"],
                         cwd=PKG.parent, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_file_in_core_is_a_house_of_its_own():
    """A room is one job: no module of core over 400 lines."""
    long = {str(f.relative_to(PKG)): n for f in sorted(PKG.rglob("*.py"))
            if (n := len(f.read_text().splitlines())) > 400}
    assert not long, long


def test_no_plugin_imports_private_tokzoo_modules():
    """First-party plugins use only what docs/plugins.md lists as public."""
    public = ("tokzoo", "tokzoo.api", "tokzoo.nn", "tokzoo.data", "tokzoo.train", "tokzoo.train.losses",
              "tokzoo.train.recipes",
              "tokzoo.registry", "tokzoo.config", "tokzoo.errors", "tokzoo.testing")
    root = PKG.parent / "plugins"
    bad = [f"{f.relative_to(root)}: {m}" for f in sorted(root.rglob("*.py")) for m in imports_of(f) if m not in public]
    assert not bad, bad
