"""tokzoo-zoo: every vector-quantize-pytorch family through tokzoo's public contract."""
from __future__ import annotations

import json

import pytest
import torch

from tokzoo.api import Codes
from tokzoo.config import load_run_config
from tokzoo.registry import build, get_registry

FAMILIES = ["vector-quantize", "residual-vq", "fsq", "residual-fsq", "lfq", "bsq", "simvq", "latent-quantize"]
OWN = ["msvq"]  # the zoo's own quantizers (not the library's): tests/test_multiscale.py
TINY = {"vq-plain-tiny": "vector-quantize", "vq-fixes-tiny": "vector-quantize", "rvq-tiny": "residual-vq",
        "fsq-tiny": "fsq", "residual-fsq-tiny": "residual-fsq", "lfq-tiny": "lfq", "bsq-tiny": "bsq",
        "simvq-tiny": "simvq", "latent-quantize-tiny": "latent-quantize"}


def test_every_family_is_registered_with_a_description_and_a_tiny_preset():
    zoo = {c.name: c for c in get_registry().list("quantizer") if c.distribution == "tokzoo-zoo"}
    assert sorted(zoo) == sorted(FAMILIES + OWN)
    assert all(c.description for c in zoo.values())
    assert sorted(set(TINY.values())) == sorted(FAMILIES)


def _quantizer(preset: str):
    spec = load_run_config(preset)["model"]["quantizer"]
    torch.manual_seed(0)
    return build("quantizer", spec), spec


@pytest.mark.parametrize("preset", sorted(TINY))
def test_codes_round_trip_through_token_ids_to_the_quantized_output(preset):
    from tokzoo.api import CodeSpec

    q, _ = _quantizer(preset)
    q.eval()
    feats = torch.randn(2, q.dim, 4, 4)
    with torch.no_grad():
        out = q(feats)
    assert out.codes.layout == q.layout and out.codes.grid == (4, 4)
    ids = out.codes.token_ids()
    assert int(ids.max()) < out.codes.token_vocab_size
    back = Codes.from_token_ids(ids, CodeSpec(q.layout, q.vocab, (4, 4)))
    with torch.no_grad():
        rebuilt = q.lookup(back)
    assert rebuilt.shape == out.quantized.shape
    assert torch.allclose(rebuilt, out.quantized, atol=1e-5)


@pytest.mark.parametrize("preset", sorted(TINY))
def test_gradients_flow_through_the_straight_through_path(preset):
    q, _ = _quantizer(preset)
    q.train()
    feats = torch.randn(2, q.dim, 4, 4, requires_grad=True)
    out = q(feats)
    (out.quantized.square().mean() + sum(out.losses.values(), torch.zeros(()))).backward()
    assert feats.grad is not None and float(feats.grad.abs().sum()) > 0
    assert all(torch.isfinite(v) for v in out.losses.values())


@pytest.mark.parametrize("preset", sorted(TINY))
def test_codes_equal_the_librarys_own(preset):
    """Parity: same input and state, the wrapper's codes are the library's indices."""
    q, _ = _quantizer(preset)
    q.eval()
    feats = torch.randn(2, q.dim, 4, 4)
    with torch.no_grad():
        ours = q.library_indices(q(feats).codes)
        x = feats if q.channel_first else feats.permute(0, 2, 3, 1).reshape(2, 16, q.dim)
        theirs = q.lib(x)[1].long()
    assert torch.equal(ours, theirs)


@pytest.mark.paper  # trainings: run by `make test-paper` (CI), keeping `make test` under 10 minutes
@pytest.mark.parametrize("preset", sorted(TINY))
def test_twenty_steps_of_the_tiny_preset_improve_reconstruction(preset, tmp_path):
    from tokzoo.train.trainer import Trainer

    cfg = load_run_config(preset, ["recipe.steps=20", "trainer.lr=2e-3", "trainer.batch_size=8",
                                   "trainer.eval_images=32", "trainer.log_every=5", "data.train_size=160",
                                   "data.val_size=32", f"run_dir={tmp_path / 'run'}"])
    torch.set_num_threads(1)
    Trainer(cfg).train()
    evals = [r["eval/psnr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if "eval/psnr" in r]
    assert evals[-1] > evals[0] + 0.5, evals


def test_zoo_imports_only_the_public_api():
    import ast
    from pathlib import Path

    public = ("tokzoo", "tokzoo.api", "tokzoo.nn", "tokzoo.data", "tokzoo.train", "tokzoo.registry", "tokzoo.config",
              "tokzoo.errors", "tokzoo.testing")
    root = Path(__file__).resolve().parent.parent / "plugins" / "zoo"
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for m in mods:
                assert not m.startswith("tokzoo") or m.startswith("tokzoo_zoo") or m in public, f"{f.name}: {m}"
