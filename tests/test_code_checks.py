"""Vocabulary and codes are checked where they enter: the bench, training and
load_tokenizer each give one error naming the component (exit 3, no
traceback), before anything is measured. Each case crashed with a traceback,
allocated memory by the vocabulary, or measured float "codes" before."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import tokzoo
from tokzoo.errors import ContractError
from tokzoo.testing import registered_plugin

GREY = '''
import torch
from torch import nn

import tokzoo
from tokzoo.api import Codes, Quantizer, QuantizerOutput


class Grey(Quantizer):
    """Nearest of 8 grey levels; ``shift`` moves the codes (0: right; 8: outside the vocabulary)."""

    layout = "grid"
    shift = 0

    def __init__(self, dim: int = 4, codebook_size: int = 8):
        super().__init__()
        self.dim, self.size = dim, codebook_size
        self.table = nn.Parameter(torch.linspace(-1, 1, codebook_size)[:, None].repeat(1, dim))

    @property
    def vocab(self):
        return {"code": self.size}

    def forward(self, z):
        idx = (z.mean(1).tanh() * 3.99 + 4).long().clamp(0, self.size - 1)
        q = z + (self.lookup(Codes({"code": idx}, self.vocab)) - z).detach()
        return QuantizerOutput(q, Codes({"code": idx + type(self).shift}, self.vocab),
                               {"commitment": ((z - q.detach()) ** 2).mean()})

    def lookup(self, codes):
        return self.table[codes.levels["code"].clamp(0, self.size - 1)].permute(0, 3, 1, 2)


@tokzoo.hookimpl
def tokzoo_register_quantizers(register):
    register("grey", Grey, "grey levels")
'''

TINY = ["model.resolution=16", "data.resolution=16", "data.train_size=32", "data.val_size=8",
        "model.encoder.ch=8", "model.decoder.ch=8", "model.encoder.z_channels=16", "model.decoder.z_channels=16",
        "trainer.batch_size=8", "trainer.eval_images=8"]


DECLARED = '''
import torch
from torch import nn

import tokzoo
from tokzoo.api import Codes, CodeSpec, Tokenizer, TokenizerInfo


class Declared(Tokenizer):
    """A bench-only tokenizer whose vocabulary and codes are whatever its author wrote."""

    def __init__(self, resolution: int = 16, vocab: int = 8, kind: str = "ok"):
        super().__init__()
        self.res, self.size, self.kind = resolution, vocab, kind
        self.w = nn.Parameter(torch.zeros(()))

    @property
    def info(self):
        return TokenizerInfo(self.res, CodeSpec("grid", {"code": self.size}, (4, 4)))

    def encode(self, images):
        pooled = nn.functional.avg_pool2d(images.mean(1, keepdim=True), images.shape[-1] // 4)[:, 0]
        if self.kind == "float":  # a continuous autoencoder's latents passed off as codes
            return Codes({"code": pooled}, {"code": self.size})
        codes = (pooled * 7.99).long()
        if self.kind == "outside":
            codes = codes + self.size
        return Codes({"code": codes}, {"code": self.size})

    def decode_codes(self, codes):
        c = codes.levels["code"].float() / 8
        return nn.functional.interpolate(c[:, None].expand(-1, 3, -1, -1), size=self.res)


class Half(Tokenizer):
    """An author's first draft: encode written, decode_codes not yet."""

    def __init__(self, resolution: int = 16):
        super().__init__()

    info = Declared.info
    encode = Declared.encode


@tokzoo.hookimpl
def tokzoo_register_tokenizers(register):
    register("declared", Declared, "a tokenizer as its author declared it")
    register("half", Half, "a draft")
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The tokenizer above, installed as a distribution (what a stranger's pip install gives)."""
    from conftest import make_dist

    root = make_dist(tmp_path_factory.mktemp("site"), "tokzoo-declared", "0.1.0", {"declared": "declared_plugin"},
                     {"declared_plugin.py": DECLARED})
    return {"PYTHONPATH": str(root)}


@pytest.mark.parametrize("vocab, kind, said", [
    (0, "ok", "vocab 'code' = 0: a vocabulary is a whole number of codes from 1 to 2^62"),
    (2 ** 32, "float", "level 'code' holds torch.float32 values; codes are integers"),
    (1, "float", "level 'code' holds torch.float32 values; codes are integers"),
    (8, "outside", "outside its vocabulary 0..7"),
])
def test_the_bench_refuses_a_vocabulary_or_codes_the_contract_does_not_allow(plugin, tmp_path, cli, vocab, kind, said):
    preset = tmp_path / "decl.yaml"
    preset.write_text(f"model: {{name: declared, resolution: 16, vocab: {vocab}, kind: {kind}}}\n")
    out = tmp_path / "bench"
    run = cli("bench", "--tokenizers", str(preset), "--num-images", "8", "--metrics", "psnr,codebook,throughput",
              "--out", str(out), env=plugin)
    text = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == 3, text
    assert said in text and "tokenizer 'declared' (plugin 'declared', distribution 'tokzoo-declared 0.1.0')" in text
    assert "Traceback" not in text and not (out / "results.json").exists()


def test_the_codebook_metric_needs_no_memory_by_the_vocabulary(plugin, tmp_path, cli):
    preset = tmp_path / "big.yaml"  # 2^40 codes, of which a handful are used: counted, never allocated
    preset.write_text(f"model: {{name: declared, resolution: 16, vocab: {2 ** 40}}}\n")
    run = cli("bench", "--tokenizers", str(preset), "--num-images", "8", "--metrics", "codebook,throughput",
              "--out", str(tmp_path / "bench"), env=plugin)
    assert run.returncode == 0, run.stdout + run.stderr
    import json

    from conftest import name_of

    e = json.loads((tmp_path / "bench" / "results.json").read_text())["tokenizers"][name_of(preset)]
    assert 0 < e["metrics"]["usage/code"] < 1e-9 and e["metrics"]["perplexity/code"] >= 1
    assert e["metrics"]["bits_per_image"] == 16 * 40
    # the probes' GPT grows with the vocabulary: bounded, said (the AR / VQA probe is then unavailable)
    from tokzoo.nn.gpt import GPTConfig

    with pytest.raises(ValueError, match="beyond the GPT's bound of 1048576"):
        GPTConfig(vocab=2 ** 40, length=16, num_classes=2)


def test_load_tokenizer_refuses_a_tokenizer_whose_codes_broke_the_contract(tmp_path, cli):
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    plugin = {}
    exec(GREY.replace('"grey"', '"shifted"'), plugin)  # the grey quantizer below, registered as 'shifted'
    Shifted = plugin["Grey"]
    tokzoo_register_quantizers = plugin["tokzoo_register_quantizers"]

    with registered_plugin(SimpleNamespace(tokzoo_register_quantizers=tokzoo_register_quantizers), "shifted"):
        run = tmp_path / "run"
        cfg = load_run_config("vq-tiny", TINY + ["model.quantizer={name: shifted, dim: 4, codebook_size: 8}",
                                                 "recipe.steps=1", f"run_dir={run}"])
        Trainer(cfg).train()
        tokzoo.load_tokenizer(run)  # the codes are right
        Shifted.shift = 8  # a later version of the plugin: codes outside the vocabulary
        with pytest.raises(ContractError, match=r"its quantizer quantizer 'shifted' .*: encode\(\) level 'code' holds codes "
                                                r"from \d+ to \d+, outside its vocabulary 0\.\.7"):
            tokzoo.load_tokenizer(run)
        # and training with it stops at its first pass, naming it, before a step is taken
        again = load_run_config("vq-tiny", TINY + ["model.quantizer={name: shifted, dim: 4, codebook_size: 8}",
                                                   "recipe.steps=1", f"run_dir={tmp_path / 'again'}"])
        with pytest.raises(ContractError, match=r"'shifted'.*forward\(\) level 'code' holds codes from \d+ to \d+, outside"):
            Trainer(again).train()
        assert not list((tmp_path / "again").glob("checkpoints/*/model.safetensors"))


def test_a_tokenizer_missing_a_method_of_the_contract_is_named_not_a_traceback(plugin, tmp_path, cli):
    preset = tmp_path / "half.yaml"
    preset.write_text("model: {name: half, resolution: 16}\n")
    run = cli("bench", "--tokenizers", str(preset), "--num-images", "8", "--metrics", "psnr",
              "--out", str(tmp_path / "bench"), env=plugin)
    text = " ".join(run.stderr.split())
    assert run.returncode == 3 and "Traceback" not in text, text
    assert "tokenizer 'half' (plugin 'declared', distribution 'tokzoo-declared 0.1.0') cannot be built" in text
    assert "decode_codes" in text


def test_a_plugins_mistakes_are_named_where_the_user_meets_them(tmp_path, cli):
    """Presets left out of the package, hooks not marked, a run whose plugin was uninstalled."""
    from conftest import make_dist

    source = DECLARED.replace("@tokzoo.hookimpl\ndef tokzoo_register_tokenizers", "def tokzoo_register_tokenizers")
    source += ("\n\n@tokzoo.hookimpl\ndef tokzoo_register_presets(register):\n"
               "    from pathlib import Path\n    register('declared', Path(__file__).parent / 'declared_configs')\n")
    site = make_dist(tmp_path / "site", "tokzoo-declared", "0.2.0", {"declared": "declared_plugin"},
                     {"declared_plugin.py": source})
    env = {"PYTHONPATH": str(site)}
    listed = cli("plugins", env=env)
    said = " ".join(listed.stdout.split())
    assert "'tokzoo_register_tokenizers' is not marked @tokzoo.hookimpl and register nothing" in said
    assert "lists presets in" in said and "is package-data set in its pyproject.toml" in said
    # the user's next command names the same reasons beside "unknown ..."
    preset = tmp_path / "decl.yaml"
    preset.write_text("model: {name: declared, resolution: 16}\n")
    bench = cli("bench", "--tokenizers", str(preset), "--num-images", "8", "--metrics", "psnr",
                "--out", str(tmp_path / "b"), env=env)
    text = " ".join(bench.stderr.split())
    assert bench.returncode == 2 and "unknown tokenizer 'declared'" in text
    assert "note: plugin 'declared' (tokzoo-declared 0.2.0) 'tokzoo_register_tokenizers' is not marked" in text
    train = cli("train", "declared-tiny", env=env)
    assert train.returncode == 2 and "is package-data set" in " ".join(train.stderr.split())


def test_a_run_whose_plugin_is_uninstalled_names_the_distribution_to_install(tmp_path, cli):
    from conftest import make_dist

    site = make_dist(tmp_path / "site", "tokzoo-grey", "0.3.0", {"grey": "grey_plugin"}, {"grey_plugin.py": GREY})
    run = tmp_path / "run"
    trained = cli("train", "vq-tiny", *TINY, "model.quantizer={name: grey, dim: 4, codebook_size: 8}",
                  "recipe.steps=1", f"run_dir={run}", env={"PYTHONPATH": str(site)})
    assert trained.returncode == 0, trained.stdout + trained.stderr
    gone = cli("bench", "--tokenizers", str(run), "--num-images", "8", "--metrics", "psnr", "--out", str(tmp_path / "b"))
    text = " ".join(gone.stderr.split())
    assert gone.returncode == 2 and "Traceback" not in text, text
    assert "its quantizer 'grey' was built by distribution 'tokzoo-grey 0.3.0', which is not installed here: " \
           "pip install tokzoo-grey" in text


def test_tokzoo_show_gives_a_components_parameters_and_a_presets_resolved_config(plugin, cli):
    vq = cli("show", "vq")
    lines = vq.stdout.splitlines()
    assert vq.returncode == 0 and "quantizer 'vq'" in vq.stdout
    assert any(line.split()[:3] == ["codebook_size", "int", "512"] for line in lines), vq.stdout
    recipe = cli("show", "reconstruction")
    assert any(line.split()[:4] == ["recon", "str", "'l1'", "l1"] for line in recipe.stdout.splitlines())
    preset = cli("show", "vq-tiny")
    assert "preset 'vq-tiny'" in preset.stdout and "quantizer: {name: vq, codebook_size: 512" in preset.stdout
    assert "replaced whole" in " ".join(preset.stdout.split())  # inherit's rule, said where it applies
    stranger = cli("show", "declared", env=plugin)  # a plugin's component, from its signature
    assert "tokenizer 'declared' (tokzoo-declared" in stranger.stdout
    assert any(line.split()[:3] == ["vocab", "int", "8"] for line in stranger.stdout.splitlines())
    typo = cli("show", "vqq")
    assert typo.returncode == 2 and "Did you mean 'vq'" in typo.stderr and "Traceback" not in typo.stderr
    assert all(len(line) <= 80 for out in (vq, recipe, preset) for line in out.stdout.splitlines())
