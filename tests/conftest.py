import atexit
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKZOO_WEIGHTS_DIR", str(Path(__file__).parent / "_no_weights_here"))
os.environ["TOKZOO_CACHE_DIR"] = tempfile.mkdtemp(prefix="tokzoo-test-cache-")  # never the user's cache
atexit.register(shutil.rmtree, os.environ["TOKZOO_CACHE_DIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parent.parent

# `make test` runs the suite on every core with pytest-xdist (-n auto): the workers share the cores, so each
# one, and every command it starts, uses its share of threads (set before torch is imported, kept if given)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))


def free_port() -> int:
    """A TCP port that nothing listens on now: torchrun tests that run side by side never share one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _fresh_registry():
    from tokzoo.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


def run_tokzoo(*args, env=None, cwd=None, timeout=300):
    """Run the real `tokzoo` command in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tokzoo.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def run_tokzoo_here(*args, env=None, cwd=None, timeout=300):
    """The `tokzoo` command line run in this process (``tokzoo.cli.main``):
    the same exit code, stdout and stderr as :func:`run_tokzoo`, without a
    new interpreter importing torch (about 3 s a call). ``env`` and ``cwd``
    apply for the call only; an uncaught exception gives exit 1 with its
    traceback on stderr, as the real command would. ``PYTHONPATH`` puts its
    folders first on ``sys.path`` for the call (modules imported from them
    are forgotten after); one with a sitecustomize gets a real process.
    Where a separate process is the point (signals, torchrun), use run_tokzoo."""
    import contextlib
    import io
    import traceback

    from tokzoo import cli as tokzoo_cli
    from tokzoo.registry import reset_registry

    extra = [p for p in (env or {}).get("PYTHONPATH", "").split(os.pathsep) if p]
    if any((Path(p) / f).exists() for p in extra for f in ("sitecustomize.py", "usercustomize.py")):
        return run_tokzoo(*args, env=env, cwd=cwd, timeout=timeout)  # code that runs at interpreter start
    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    if extra:  # PYTHONPATH: those folders first on sys.path for the call (a plugin "installed" there)
        sys.path[0:0] = extra
        importlib.invalidate_caches()
    out, err = io.StringIO(), io.StringIO()
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    reset_registry()  # TOKZOO_PLUGINS and the like are read when the registry loads
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = tokzoo_cli.main([str(a) for a in args])
            except SystemExit as exc:  # argparse: usage on stderr, exit 2
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what the real command would print before exit 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        if extra:  # forget the modules imported from there: the next call's folder may hold others
            sys.path[:] = saved_path
            roots = [str(Path(p).resolve()) for p in extra]
            for name, mod in list(sys.modules.items()):
                f = getattr(mod, "__file__", None) or ""
                if f and any(str(Path(f).resolve()).startswith(r + os.sep) for r in roots):
                    del sys.modules[name]
            importlib.invalidate_caches()
        reset_registry()
    return subprocess.CompletedProcess(["tokzoo", *map(str, args)], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    """The CLI in this process (see :func:`run_tokzoo_here`); ``run_tokzoo`` where a new process is the point."""
    return run_tokzoo_here


def make_dist(root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """A throwaway installed distribution: ``*.dist-info`` + modules in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "[tokzoo]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps)
    for name, source in modules.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A tiny `clip` teacher trained for two steps (shared by the tokenizers' tests)."""
    from tokzoo.config import load_run_config
    from tokzoo.registry import reset_registry
    from tokzoo.train.trainer import Trainer

    run = tmp_path_factory.mktemp("teacher") / "clip"
    cfg = load_run_config("clip", ["recipe.steps=2", "recipe.probe_images=32", "model.width=32", "model.layers=1",
                                   "model.text_width=32", "model.text_layers=1", "model.embed_dim=32",
                                   "data.train_size=64", "data.val_size=32", "trainer.batch_size=8", f"run_dir={run}"])
    Trainer(cfg).train()
    reset_registry()
    return run


def docs_section(start: str, end: str) -> tuple[str, str]:
    """(the first python block, the first yaml block) of docs/plugins.md between two headings."""
    import re

    doc = (REPO / "docs" / "plugins.md").read_text()
    section = doc[doc.index(start):doc.index(end)]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0], re.findall(r"```yaml\n(.*?)```", section, re.S)[0]


def install_docs_plugin(root: Path, code: str, preset: str, dist: str, package: str, preset_name: str) -> dict:
    """A plugin from the docs' code, its preset registered, installed as a throwaway
    distribution under ``root``: the environment that finds it (``PYTHONPATH``)."""
    code += ("\n\n@tokzoo.hookimpl\ndef tokzoo_register_presets(register):\n"
             f"    from pathlib import Path\n    register('{package}', Path(__file__).parent / 'configs')\n")
    make_dist(root, dist, "0.1.0", {package: f"tokzoo_{package}"},
              {f"tokzoo_{package}/__init__.py": code, f"tokzoo_{package}/configs/{preset_name}.yaml": preset})
    return {"PYTHONPATH": str(root)}



def pytest_terminal_summary(terminalreporter):
    """What tests recorded as their ``summary`` property (timings, sizes), after the run: printed from the
    reports, so it arrives from pytest-xdist's workers too (their own output is not shown)."""
    lines = [value for report in terminalreporter.stats.get("passed", []) if report.when == "call"
             for key, value in report.user_properties if key == "summary"]
    if lines:
        terminalreporter.section("recorded by the tests")
        for line in lines:
            terminalreporter.write_line(line)


def name_of(path) -> str:
    """The results.json key (display name) of a tokenizer benched alone by ``path``."""
    from tokzoo.bench.results import short_names

    return short_names([str(path)])[str(path)]
