"""One hand-written test per hook (datasette style), each through a real use of
what the hook registers; a test fails when a hook has none, and when a hook's
section in docs/plugins.md is missing its exact signature or example."""
from __future__ import annotations

import inspect
import json
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tokzoo
from tokzoo import hookspecs
from tokzoo.api import (Codes, CodeSpec, Decoder, Encoder, Metric, Quantizer, QuantizerOutput,
                        Tokenizer, TokenizerInfo, TokenizerOutput)
from tokzoo.testing import registered_plugin

from conftest import make_dist, name_of
from conftest import REPO



# -- components a plugin author would write -----------------------------------------------
class Patchify(Encoder):
    def __init__(self, patch: int = 4, channels: int = 16):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, patch, stride=patch)
        self.out_channels, self.downsample = channels, patch

    def forward(self, images):
        return self.proj(images)


class Sign(Quantizer):
    layout = "grid"

    def __init__(self, dim: int = 4):
        super().__init__()
        self.dim = dim
        self.register_buffer("bits", 2 ** torch.arange(dim))

    @property
    def vocab(self):
        return {"code": 2 ** self.dim}

    def forward(self, features):
        q = features + (torch.where(features > 0, 1.0, -1.0) - features).detach()
        idx = ((q.detach() > 0).long() * self.bits[:, None, None]).sum(1)
        return QuantizerOutput(q, Codes({"code": idx}, self.vocab))

    def lookup(self, codes):
        return ((codes.levels["code"][:, None] & self.bits[:, None, None]) > 0).float() * 2 - 1


class PixelShuffleDecoder(Decoder):
    def __init__(self, in_channels: int = 16, upsample: int = 4):
        super().__init__()
        self.in_channels, self.upsample = in_channels, upsample
        self.proj = nn.Conv2d(in_channels, 3 * upsample ** 2, 1)

    def forward(self, quantized):
        return F.pixel_shuffle(self.proj(quantized), self.upsample)

    def last_layer(self):
        return self.proj.weight


class Palette(Tokenizer):
    def __init__(self, resolution: int = 16, patch: int = 4):
        super().__init__()
        self.patch = patch
        self._info = TokenizerInfo(resolution, CodeSpec("grid", {"colour": 512}, (resolution // patch,) * 2))

    @property
    def info(self):
        return self._info

    def encode(self, images):
        q = (F.avg_pool2d(images, self.patch) * 7).round().long()
        return Codes({"colour": (q[:, 0] * 8 + q[:, 1]) * 8 + q[:, 2]}, {"colour": 512})

    def decode_codes(self, codes):
        i = codes.levels["colour"]
        return F.interpolate(torch.stack([i // 64, i // 8 % 8, i % 8], 1).float() / 7, scale_factor=self.patch)

    def forward(self, images):
        codes = self.encode(images)
        rec = self.decode_codes(codes)
        return TokenizerOutput(rec, QuantizerOutput(rec, codes))


class Noise(torch.utils.data.Dataset):
    def __init__(self, split: str = "train", resolution: int = 16, size: int = 8, amplitude: float = 1.0):
        self.split, self.resolution, self.size, self.amplitude = split, resolution, size, amplitude

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i + (1000 if self.split == "val" else 0))
        img = 0.5 + self.amplitude * (torch.rand(3, self.resolution, self.resolution, generator=g) - 0.5)
        return {"image": img, "label": i % 2, "caption": "noise", "index": i}


class MAE(Metric):
    name = "mae"
    better = {"mae": "lower"}

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def reset(self, tokenizer):
        self.state = {"sum": torch.zeros((), dtype=torch.float64), "n": torch.zeros((), dtype=torch.float64)}

    def update(self, originals, reconstructions, codes, batch):
        err = (originals.double() - reconstructions.double()).abs().flatten(1).mean(1)
        self.state["sum"] += err.sum()
        self.state["n"] += len(err)

    def compute(self):
        return {"mae": self.scale * float(self.state["sum"] / self.state["n"])}


def _plugin(**hooks):
    """A plugin object with the given hook functions."""
    ns = {name: staticmethod(tokzoo.hookimpl(fn)) for name, fn in hooks.items()}
    return type("Plugin", (), ns)()


def _composed(encoder=None, quantizer=None, decoder=None):
    from tokzoo.registry import build

    return build("tokenizer", {"name": "composed", "resolution": 16,
                               "encoder": encoder or {"name": "conv", "ch": 8, "ch_mult": [1, 2, 2], "z_channels": 16},
                               "quantizer": quantizer or {"name": "vq", "codebook_size": 16, "dim": 4},
                               "decoder": decoder or {"name": "conv", "ch": 8, "ch_mult": [1, 2, 2], "z_channels": 16}})


# -- one test per hook ------------------------------------------------------------------------
def test_hook_tokzoo_register_encoders():
    def tokzoo_register_encoders(register):
        register("patchify", Patchify, "4x4 patches")

    with registered_plugin(_plugin(tokzoo_register_encoders=tokzoo_register_encoders), "enc") as reg:
        assert reg.get("encoder", "patchify").description == "4x4 patches"
        tok = _composed(encoder={"name": "patchify", "patch": 4})
        assert tok.encode(torch.rand(2, 3, 16, 16)).grid == (4, 4)


def test_hook_tokzoo_register_quantizers():
    def tokzoo_register_quantizers(register):
        register("sign", Sign, "sign bits")

    with registered_plugin(_plugin(tokzoo_register_quantizers=tokzoo_register_quantizers), "q"):
        tok = _composed(quantizer={"name": "sign", "dim": 5})
        codes = tok.encode(torch.rand(2, 3, 16, 16))
        assert codes.vocab == {"code": 32}
        assert torch.equal(tok.decode(codes.token_ids()), tok.decode(codes))


def test_hook_tokzoo_register_decoders():
    def tokzoo_register_decoders(register):
        register("pixel-shuffle", PixelShuffleDecoder, "1x1 conv + pixel shuffle")

    with registered_plugin(_plugin(tokzoo_register_decoders=tokzoo_register_decoders), "dec"):
        tok = _composed(decoder={"name": "pixel-shuffle", "in_channels": 16, "upsample": 4})
        assert tok.reconstruct(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)
        assert tok.last_layer() is tok.decoder.proj.weight


def test_hook_tokzoo_register_tokenizers():
    def tokzoo_register_tokenizers(register):
        register("palette-test", Palette, "mean colours")

    with registered_plugin(_plugin(tokzoo_register_tokenizers=tokzoo_register_tokenizers), "tok") as reg:
        tok = reg.create("tokenizer", "palette-test", resolution=16)
        x = torch.rand(2, 3, 16, 16)
        assert tok.info.tokens_per_image == 16 and (tok.reconstruct(x) - x).abs().max() < 1


def test_hook_tokzoo_register_recipes(tmp_path):
    from tokzoo.config import load_run_config
    from tokzoo.train import Recipe, Stage, StepResult
    from tokzoo.train.trainer import Trainer

    class L1(Recipe):
        def __init__(self, steps: int = 2):
            self.steps = steps

        def stages(self):
            return [Stage("l1", self.steps)]

        def generator_step(self, model, tokenizer, batch, ctx):
            out = model(batch["image"])
            terms = {"l1": (out.reconstruction - batch["image"]).abs().mean(), **out.quant.losses}
            return StepResult(sum(terms.values()), terms, out.reconstruction)

    def tokzoo_register_recipes(register):
        register("l1-only", L1, "plain L1")

    with registered_plugin(_plugin(tokzoo_register_recipes=tokzoo_register_recipes), "rec"):
        cfg = load_run_config("vq-tiny", ["recipe={name: l1-only, steps: 2}", "data.train_size=8", "data.val_size=4",
                                          "trainer.batch_size=4", "trainer.log_every=1", f"run_dir={tmp_path / 'r'}"])
        Trainer(cfg).train()
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "l1" in r] == [1, 2]


def test_hook_tokzoo_register_datasets():
    from tokzoo.data import build_dataset, fingerprint

    def tokzoo_register_datasets(register):
        register("noise", Noise, "seeded noise")

    with registered_plugin(_plugin(tokzoo_register_datasets=tokzoo_register_datasets), "data"):
        ds = build_dataset({"name": "noise", "resolution": 24, "amplitude": 0.0, "size": 3}, "val")
        assert len(ds) == 3 and ds.split == "val" and ds[0]["image"].shape == (3, 24, 24)
        assert torch.all(ds[0]["image"] == 0.5)
        fp = fingerprint(ds, {"name": "noise", "amplitude": 0.0})
        assert fp == fingerprint(ds, {"name": "noise", "amplitude": 0.0}) != fingerprint(ds, {"name": "noise"})


def test_hook_tokzoo_register_metrics(tmp_path):
    from tokzoo.bench.harness import Bench, BenchOptions
    from tokzoo.bench.render import render_markdown

    def tokzoo_register_metrics(register):
        register("mae", MAE, "mean absolute error")

    def tokzoo_register_tokenizers(register):
        register("palette-test", Palette, "mean colours")

    plugin = _plugin(tokzoo_register_metrics=tokzoo_register_metrics,
                     tokzoo_register_tokenizers=tokzoo_register_tokenizers)
    preset = tmp_path / "palette-16.yaml"
    preset.write_text("model: {name: palette-test, resolution: 16}\n")
    with registered_plugin(plugin, "metric"):
        res = {}
        for scale in (1.0, 2.0):
            opts = BenchOptions(tokenizers=[str(preset)], metrics=["mae"], num_images=4, device="cpu",
                                out_dir=str(tmp_path / f"b{scale}"), metric_params={"mae": {"scale": scale}})
            res[scale] = Bench(opts).run()["tokenizers"][name_of(preset)]["metrics"]["mae"]
        assert res[2.0] == pytest.approx(2 * res[1.0])
        assert "| mae |" in render_markdown(json.loads((tmp_path / "b1.0" / "results.json").read_text()))


def test_hook_tokzoo_register_presets(tmp_path):
    from tokzoo.config import list_presets, load_run_config

    (tmp_path / "mine-tiny.yaml").write_text("inherit: vq-tiny\nseed: 7\nmodel:\n  quantizer: {name: vq, dim: 4}\n"
                                             "  decoder: {name: conv, ch: 16}\n")

    def tokzoo_register_presets(register):
        register("mine", tmp_path)

    with registered_plugin(_plugin(tokzoo_register_presets=tokzoo_register_presets), "presets"):
        assert list_presets()["mine-tiny"] == tmp_path / "mine-tiny.yaml"
        cfg = load_run_config("mine-tiny")
    assert cfg["seed"] == 7 and cfg["model"]["quantizer"] == {"name": "vq", "codebook_size": 512, "dim": 4,
                                                              "beta": 0.25}  # same name: keys merge
    assert cfg["model"]["decoder"]["ch"] == 16 and cfg["model"]["decoder"]["z_channels"] == 64


@pytest.mark.parametrize("hook", sorted(hookspecs.HOOK_KINDS))
def test_every_hook_has_a_hand_written_test(hook):
    assert inspect.isfunction(globals().get(f"test_hook_{hook}")), f"hook {hook} has no test_hook_{hook}"


@pytest.mark.parametrize("hook", sorted(hookspecs.HOOK_KINDS))
def test_every_hook_has_a_docs_section_with_signature_and_example(hook):
    doc = (REPO / "docs" / "plugins.md").read_text()
    m = re.search(rf"### `{hook}`\n(.*?)(?=\n### |\n## )", doc, re.S)
    assert m, f"docs/plugins.md has no '### `{hook}`' section"
    section = m.group(1)
    spec = inspect.signature(getattr(hookspecs, hook))
    assert f"def {hook}{spec}" in section, f"the section of {hook} does not give its signature def {hook}{spec}"
    assert re.search(rf"```python\n@tokzoo.hookimpl\ndef {hook}\(register\):\n    register\(", section), \
        f"the section of {hook} has no example"


def test_a_plugin_metric_and_dataset_take_parameters_on_the_command_line(cli, tmp_path):
    src = inspect.getsource(sys.modules[__name__])
    module = "\n".join([
        "import torch", "import torch.nn.functional as F", "from dataclasses import dataclass", "import tokzoo",
        "from tokzoo.api import Codes, CodeSpec, Metric, QuantizerOutput, Tokenizer, TokenizerInfo, TokenizerOutput",
        *[inspect.getsource(obj) for obj in (Palette, Noise, MAE)],
        "@tokzoo.hookimpl\ndef tokzoo_register_tokenizers(register):\n    register('palette-test', Palette, 'p')",
        "@tokzoo.hookimpl\ndef tokzoo_register_datasets(register):\n    register('noise', Noise, 'n')",
        "@tokzoo.hookimpl\ndef tokzoo_register_metrics(register):\n    register('mae', MAE, 'm')",
        "@tokzoo.hookimpl\ndef tokzoo_register_presets(register):\n"
        "    from pathlib import Path\n    register('extra', Path(__file__).parent / 'configs')",
    ])
    assert "class MAE" in src
    make_dist(tmp_path / "site", "tokzoo-extra", "0.2.0", {"extra": "tokzoo_extra"},
              {"tokzoo_extra/__init__.py": module,
               "tokzoo_extra/configs/palette-16.yaml": "model: {name: palette-test, resolution: 16}\n"})
    env = {"PYTHONPATH": str(tmp_path / "site")}
    out = cli("bench", "--tokenizers", "palette-16", "--data", "noise", "data.amplitude=0.0", "data.size=6",
              "--num-images", "6", "--metrics", "psnr,mae", "metrics.mae.scale=3", "--out", str(tmp_path / "b"), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    entry = json.loads((tmp_path / "b" / "results.json").read_text())["tokenizers"]["palette-16"]
    assert entry["num_images"] == 6 and "mae" in entry["metrics"]
    assert "mae" in out.stdout and "mae" in (tmp_path / "b" / "results.md").read_text()
    assert "mae" in (tmp_path / "b" / "results.csv").read_text().splitlines()[0]
    bad = cli("bench", "--tokenizers", "palette-16", "--data", "noise", "--metrics", "mae", "metrics.mae.scael=3",
              "--out", str(tmp_path / "b2"), env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'scale'" in bad.stderr and "Traceback" not in bad.stderr
