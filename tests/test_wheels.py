"""docs/plugins.md's worked example, built and installed as a stranger would.

tokzoo and the example plugin are built as wheels and installed (not
editable) into a fresh virtual environment; their dependencies (torch & co.)
come from this environment through a folder of links, so nothing is
downloaded and no editable tokzoo leaks in. Then, from an unrelated working
directory, through the real CLI: the core presets ship in the wheel, the
example's preset inherits ``vq-tiny``, trains a few steps and benches.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO

DOCS = REPO / "docs" / "plugins.md"


def docs_blocks() -> dict[str, str]:
    """The worked example's files, by name, as docs/plugins.md shows them."""
    text = DOCS.read_text()
    files = {}
    for name, lang in [("pyproject.toml", "toml"), ("tokzoo_sign/__init__.py", "python"),
                       ("tokzoo_sign/configs/sign-tiny.yaml", "yaml")]:
        m = re.search(rf"`{re.escape(name)}`[^\n]*:\n\n```{lang}\n(.*?)```", text, re.S)
        assert m, f"docs/plugins.md no longer shows {name} as a ```{lang} block after its name"
        files[name] = m.group(1)
    return files


def _run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheels")
    plugin = root / "tokzoo-sign"
    for name, text in docs_blocks().items():
        (plugin / name).parent.mkdir(parents=True, exist_ok=True)
        (plugin / name).write_text(text)
    wheels = root / "dist"
    core = root / "tokzoo-src"  # a copy: building never writes build/ into the checkout
    shutil.copytree(REPO / "tokzoo", core / "tokzoo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, core / name)
    for src in (core, plugin):
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
              str(src)], cwd=root)
    env_dir = root / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(env_dir)])
    purelib = Path(sysconfig.get_paths(vars={"base": str(env_dir), "platbase": str(env_dir)})["purelib"])
    deps = root / "deps"  # links to this environment's packages, minus every tokzoo distribution
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if not re.match(r"(tokzoo|__editable__)", entry.name):
            (deps / entry.name).symlink_to(entry)
    (purelib / "deps.pth").write_text(str(deps) + "\n")
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(purelib),
          *map(str, sorted(wheels.glob("*.whl")))])
    python = env_dir / "bin" / "python"
    work = root / "somewhere-else"
    work.mkdir()
    return python, work


def tokzoo(python, work, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run([str(python), "-m", "tokzoo.cli", *args], capture_output=True, text=True, cwd=work,
                          env=env, timeout=900)


@pytest.mark.slow
def test_core_presets_ship_in_the_wheel_and_the_docs_plugin_inherits_them(fresh_env):
    python, work = fresh_env
    where = _run([str(python), "-c", "import tokzoo; print(tokzoo.__file__)"], cwd=work).stdout
    assert str(REPO) not in where and "site-packages" in where  # the wheel, not this checkout
    out = tokzoo(python, work, "list", "preset")
    assert out.returncode == 0, out.stderr
    assert "vq-tiny" in out.stdout and "clip" in out.stdout and "sign-tiny" in out.stdout
    plugins = tokzoo(python, work, "plugins")
    assert re.search(r"sign\s.*tokzoo-sign", plugins.stdout) and "failed" not in plugins.stdout


@pytest.mark.slow
def test_docs_worked_example_trains_and_benches_from_a_wheel(fresh_env):
    python, work = fresh_env
    train = tokzoo(python, work, "train", "sign-tiny", "recipe.steps=3", "trainer.batch_size=4", "trainer.eval_images=4",
                   "data.train_size=16", "data.val_size=8")
    assert train.returncode == 0, train.stderr[-3000:]
    config = json.loads((work / "runs" / "sign-tiny" / "config.json").read_text())
    assert config["model"]["quantizer"] == {"name": "sign", "dim": 10}  # replaced, not merged with vq's keys
    bench = tokzoo(python, work, "bench", "--tokenizers", "sign-tiny", "--num-images", "8", "--metrics",
                   "psnr,ssim,codebook", "--out", "bench")
    assert bench.returncode == 0, bench.stderr[-3000:]
    results = json.loads((work / "bench" / "results.json").read_text())
    assert results["tokenizers"]["sign-tiny"]["num_images"] == 8
