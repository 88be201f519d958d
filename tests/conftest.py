import atexit
import os
import shutil
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


@pytest.fixture
def cli():
    return run_tokzoo


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
