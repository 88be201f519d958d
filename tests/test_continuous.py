"""Continuous tokenizers (latents, no discrete codes) as reference rows: the
docs' plain autoencoder plugin trained and benched from outside, diffusers'
AutoencoderKL through `diffusers-kl`, and the contract's checks of latents."""
import json
import sys

import pytest
import torch

import tokzoo
from tokzoo.api import Codes, CodeSpec, LatentSpec, Latents, Tokenizer, TokenizerInfo
from tokzoo.errors import ContractError

from conftest import docs_section, install_docs_plugin, name_of


CODE_METRICS = ("codebook", "ar-probe", "vqa-probe", "bits_per_image")


def test_the_continuous_autoencoder_of_the_docs_trains_and_benches_from_outside(cli, tmp_path):
    """Every output marks the row continuous and says why what needs codes is n/a; no traceback."""
    code, preset = docs_section("## A continuous tokenizer", "## The hooks")
    env = install_docs_plugin(tmp_path / "site", code, preset, "tokzoo-plainae", "plainae", "plain-ae-tiny")
    train = cli("train", "plain-ae-tiny", "recipe.steps=3", "data.train_size=32", "data.val_size=8",
                "trainer.eval_images=8", "trainer.batch_size=8", env=env, cwd=tmp_path)
    assert train.returncode == 0, train.stdout + train.stderr
    assert "stage 1 done: psnr" in train.stdout and "codes used" not in train.stdout
    bench = cli("bench", "--tokenizers", "plain-ae-tiny", "--num-images", "8", "--probe-train-images", "16",
                "--metrics", "psnr,ssim,codebook,probe,throughput,ar-probe,vqa-probe", "--out", str(tmp_path / "b"),
                env=env, cwd=tmp_path)
    assert bench.returncode == 0 and "Traceback" not in bench.stderr, bench.stdout + bench.stderr
    assert "plain-ae-tiny (continuous)" in bench.stdout
    e = json.loads((tmp_path / "b" / "results.json").read_text())["tokenizers"]["plain-ae-tiny"]
    assert e["info"]["layout"] == "continuous" and e["info"]["latent_channels"] == 4 and e["info"]["vocab"] == {}
    assert e["info"]["token_grid"] == [8, 8] and e["info"]["bits_per_image"] is None
    for key in ("psnr", "ssim", "probe_top1", "tokens_per_image"):
        assert key in e["metrics"], key
    assert not any(k.startswith(("usage/", "perplexity/", "ar_", "vqa_")) for k in e["metrics"])
    assert "bits_per_image" not in e["metrics"]
    assert set(CODE_METRICS) <= set(e["unavailable"]) and all("continuous" in e["unavailable"][m] for m in CODE_METRICS)
    assert e["token_features"].startswith("continuous latents")
    md = (tmp_path / "b" / "results.md").read_text()
    assert "| plain-ae-tiny (continuous) |" in md and "a reference row" in md
    html = (tmp_path / "b" / "report.html").read_text()
    assert "plain-ae-tiny (continuous)" in html
    csv = (tmp_path / "b" / "results.csv").read_text().splitlines()
    assert csv[0].endswith(",layout") and csv[1].startswith("plain-ae-tiny,") and csv[1].endswith(",continuous")
    # from Python, in another folder: latents in, images out; no token ids
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        from tokzoo.registry import reset_registry

        reset_registry()
        tok = tokzoo.load_tokenizer(tmp_path / "runs" / "plain-ae-tiny")
        with torch.no_grad():
            z = tok.encode(torch.rand(2, 3, 32, 32))
            assert isinstance(z, Latents) and z.values.shape == (2, 4, 8, 8)
            assert torch.equal(tok.decode(z), tok.decode(z.values))
        with pytest.raises(TypeError, match="no token ids"):
            tok.decode(torch.zeros(2, 64, dtype=torch.long))
    finally:
        sys.path.remove(str(tmp_path / "site"))
        reset_registry()


def test_the_tradeoff_frontier_leaves_a_continuous_reference_out():
    from tokzoo.bench.plots import frontier, tradeoff_png, tradeoff_points

    def entry(psnr, probe, layout="grid"):
        return {"metrics": {"psnr": psnr, "probe_top1": probe}, "info": {"layout": layout}}

    results = {"tokenizers": {"a": entry(20, 0.5), "b": entry(25, 0.4), "vae": entry(30, 0.9, "continuous")}}
    pts = tradeoff_points(results)
    assert [p["continuous"] for p in pts] == [False, False, True]
    assert frontier(pts, "psnr", "probe", True) == [0, 1]  # the VAE beats both, and is no competitor
    assert tradeoff_png(results)[:4] == b"\x89PNG"


class _Latent(Tokenizer):
    """A continuous tokenizer that can be told to break the contract."""

    def __init__(self, give="latents", spec=None):
        super().__init__()
        self.give, self.spec = give, spec or LatentSpec(3, (4, 4))
        self.conv = torch.nn.Conv2d(3, 3, 8, 8)

    @property
    def info(self):
        return TokenizerInfo(32, self.spec)

    def encode(self, images):
        z = self.conv(images)
        if self.give == "codes":
            return Codes({"code": z.argmax(1)}, {"code": 3}, "grid")
        if self.give == "long":
            return Latents(z.long())
        return Latents(z)

    def decode_codes(self, latents):
        return torch.nn.functional.interpolate(latents.values, scale_factor=8)


def test_latents_are_checked_where_they_enter():
    from tokzoo.models import check_tokenizer

    check_tokenizer(_Latent())  # as declared
    with pytest.raises(ContractError, match="returned Codes, but its info declares a LatentSpec"):
        check_tokenizer(_Latent("codes"))
    with pytest.raises(ContractError, match="torch.int64 values"):
        check_tokenizer(_Latent("long"))
    with pytest.raises(ContractError, match=r"3 channels on \(4, 4\), but its info declares 8 on \(4, 4\)"):
        check_tokenizer(_Latent(spec=LatentSpec(8, (4, 4))))
    discrete = _Latent(spec=CodeSpec("grid", {"code": 3}, (4, 4)))
    with pytest.raises(ContractError, match="returned Latents, but its info declares discrete codes"):
        check_tokenizer(discrete)
    with pytest.raises(ValueError, match="channels is a positive whole number"):
        LatentSpec(0, (4, 4))


diffusers = pytest.importorskip("diffusers")


def _kl_folder(tmp_path):
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 3,
                                  up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32),
                                  layers_per_block=1, latent_channels=4,
                                  norm_num_groups=8, sample_size=32).eval()
    folder = tmp_path / "my kl"  # a space, as people name folders
    ref.save_pretrained(str(folder))
    return ref, folder


def test_diffusers_kl_is_diffusers_own_encode_and_decode(tmp_path):
    from tokzoo.registry import build

    ref, folder = _kl_folder(tmp_path)
    tok = build("tokenizer", {"name": "diffusers-kl", "path": str(folder)}).eval()
    assert tok.info.continuous and tok.info.resolution == 32 and tok.info.codes == LatentSpec(4, (8, 8))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = ref.encode(x * 2 - 1).latent_dist.mode()
        latents = tok.encode(x)
        assert torch.equal(latents.values, z)
        assert torch.equal(tok.decode_codes(latents), (ref.decode(z).sample + 1) / 2)
        assert torch.equal(tok.reconstruct(x), ((ref(x * 2 - 1).sample + 1) / 2).clamp(0, 1))  # its own forward


def test_diffusers_kl_folder_benches_imports_and_reloads(tmp_path, cli):
    import os

    _, folder = _kl_folder(tmp_path)
    preset = tmp_path / "sd-vae.yaml"
    preset.write_text(f"inherit: diffusers-kl\nmodel: {{path: '{folder}'}}\n")
    out = cli("bench", "--tokenizers", str(preset), "--num-images", "8", "--probe-train-images", "16",
              "--metrics", "psnr,ssim,codebook,probe,throughput", "--out", str(tmp_path / "bench"), cwd=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    e = json.loads((tmp_path / "bench" / "results.json").read_text())["tokenizers"][name_of(preset)]
    assert e["info"]["layout"] == "continuous" and "probe_top1" in e["metrics"]
    assert "continuous" in e["unavailable"]["codebook"]
    out = cli("import", "diffusers-kl", str(folder), "--out", str(tmp_path / "runs" / "kl"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    x = torch.rand(2, 3, 32, 32)
    from tokzoo.registry import build

    with torch.no_grad():
        before = build("tokenizer", {"name": "diffusers-kl", "path": str(folder)}).eval().encode(x).values
    os.replace(folder, tmp_path / "gone")
    back = tokzoo.load_tokenizer(tmp_path / "runs" / "kl")
    with torch.no_grad():
        assert torch.equal(back.encode(x).values, before)
    out = cli("bench", "--tokenizers", str(preset), "--out", str(tmp_path / "b2"), cwd=tmp_path)
    assert out.returncode == 2 and "not a diffusers model folder" in out.stderr
