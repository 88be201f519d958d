"""Released tokenizers (taming VQGAN, LlamaGen VQ-16) rebuilt from files made
in exactly their public key layouts, checked against diffusers' VQModel as an
independent implementation of the same network; safe reading; `tokzoo
import`; bench end to end with --weights-dir.

The layouts below are written from the releases' own code (taming
``diffusionmodules/model.py`` + ``vqgan.py``, LlamaGen
``tokenizer_image/vq_model.py``), not from tokzoo's module, and are the ones
docs/zoo.md lists. ``SMALL`` is the documented scaled-down layout (same key
names and nesting, 32-128 channels, 64 px) used in make test; the real shapes
run in make test-paper.
"""
import argparse
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tokzoo.errors import CheckpointError, WeightsNotFoundError

diffusers = pytest.importorskip("diffusers")

REAL = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), nrb=2, z=256, res=256)
SMALL = dict(ch=32, ch_mult=(1, 1, 2, 2, 4), nrb=2, z=64, res=64)


# -- the layouts, as the releases define them ------------------------------------------
def _conv(sd, name, cin, cout, k):
    sd[f"{name}.weight"], sd[f"{name}.bias"] = (cout, cin, k, k), (cout,)


def _norm(sd, name, c):
    sd[f"{name}.weight"], sd[f"{name}.bias"] = (c,), (c,)


def _res(sd, name, cin, cout):
    _norm(sd, f"{name}.norm1", cin)
    _conv(sd, f"{name}.conv1", cin, cout, 3)
    _norm(sd, f"{name}.norm2", cout)
    _conv(sd, f"{name}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(sd, f"{name}.nin_shortcut", cin, cout, 1)


def _attn(sd, name, c):
    _norm(sd, f"{name}.norm", c)
    for p in ("q", "k", "v", "proj_out"):
        _conv(sd, f"{name}.{p}", c, c, 1)


def taming_shapes(ch, ch_mult, nrb, z, res, n_e, e_dim, attn_res=None):
    """taming VQModel: encoder.down[i].{block,attn,downsample}, mid.{block_1,attn_1,block_2},
    decoder.up[i] indexed by level, attention where the feature map is attn_res
    (16 for the f16 models at 256 px: the last level)."""
    attn_res = attn_res or res // 2 ** (len(ch_mult) - 1)
    sd = {}
    _conv(sd, "encoder.conv_in", 3, ch, 3)
    cin, cur = ch, res
    for i, m in enumerate(ch_mult):
        for j in range(nrb):
            _res(sd, f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
            if cur == attn_res:
                _attn(sd, f"encoder.down.{i}.attn.{j}", cin)
        if i != len(ch_mult) - 1:
            _conv(sd, f"encoder.down.{i}.downsample.conv", cin, cin, 3)
            cur //= 2
    for part in ("encoder", "decoder"):
        c = ch * ch_mult[-1]
        _res(sd, f"{part}.mid.block_1", c, c)
        _attn(sd, f"{part}.mid.attn_1", c)
        _res(sd, f"{part}.mid.block_2", c, c)
    _norm(sd, "encoder.norm_out", cin)
    _conv(sd, "encoder.conv_out", cin, z, 3)
    cin = ch * ch_mult[-1]
    _conv(sd, "decoder.conv_in", z, cin, 3)
    for i in reversed(range(len(ch_mult))):
        for j in range(nrb + 1):
            _res(sd, f"decoder.up.{i}.block.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if cur == attn_res:
                _attn(sd, f"decoder.up.{i}.attn.{j}", cin)
        if i != 0:
            _conv(sd, f"decoder.up.{i}.upsample.conv", cin, cin, 3)
            cur *= 2
    _norm(sd, "decoder.norm_out", cin)
    _conv(sd, "decoder.conv_out", cin, 3, 3)
    sd["quantize.embedding.weight"] = (n_e, e_dim)
    _conv(sd, "quant_conv", z, e_dim, 1)
    _conv(sd, "post_quant_conv", e_dim, z, 1)
    return sd


def llamagen_shapes(ch, ch_mult, nrb, z, res, n_e, e_dim):
    """LlamaGen VQModel: {encoder,decoder}.conv_blocks[k].{res,attn,downsample|upsample},
    mid as a list (0 res, 1 attn, 2 res), decoder blocks from the lowest
    resolution up, attention in the last level only; codebook_used buffer."""
    L = len(ch_mult)
    sd = {}
    _conv(sd, "encoder.conv_in", 3, ch, 3)
    cin = ch
    for i, m in enumerate(ch_mult):
        for j in range(nrb):
            _res(sd, f"encoder.conv_blocks.{i}.res.{j}", cin, ch * m)
            cin = ch * m
            if i == L - 1:
                _attn(sd, f"encoder.conv_blocks.{i}.attn.{j}", cin)
        if i != L - 1:
            _conv(sd, f"encoder.conv_blocks.{i}.downsample.conv", cin, cin, 3)
    for part in ("encoder", "decoder"):
        c = ch * ch_mult[-1]
        _res(sd, f"{part}.mid.0", c, c)
        _attn(sd, f"{part}.mid.1", c)
        _res(sd, f"{part}.mid.2", c, c)
    _norm(sd, "encoder.norm_out", cin)
    _conv(sd, "encoder.conv_out", cin, z, 3)
    cin = ch * ch_mult[-1]
    _conv(sd, "decoder.conv_in", z, cin, 3)
    for k, i in enumerate(reversed(range(L))):
        for j in range(nrb + 1):
            _res(sd, f"decoder.conv_blocks.{k}.res.{j}", cin, ch * ch_mult[i])
            cin = ch * ch_mult[i]
            if i == L - 1:
                _attn(sd, f"decoder.conv_blocks.{k}.attn.{j}", cin)
        if i != 0:
            _conv(sd, f"decoder.conv_blocks.{k}.upsample.conv", cin, cin, 3)
    _norm(sd, "decoder.norm_out", cin)
    _conv(sd, "decoder.conv_out", cin, 3, 3)
    sd["quantize.embedding.weight"] = (n_e, e_dim)
    sd["quantize.codebook_used"] = (65536,)
    _conv(sd, "quant_conv", z, e_dim, 1)
    _conv(sd, "post_quant_conv", e_dim, z, 1)
    return sd


def fill(shapes, seed=0):
    """Random values with sane scales: norms ~1, weights ~ 1/sqrt(fan-in)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("codebook_used"):
            sd[k] = torch.zeros(shape)
        elif ".norm" in k or "norm_out" in k:
            sd[k] = (1.0 if k.endswith("weight") else 0.0) + 0.1 * torch.randn(shape, generator=g)
        elif k.endswith("embedding.weight"):
            sd[k] = torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else shape[0]
            sd[k] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return sd


LOSS_KEYS = {"loss.discriminator.main.0.weight": (64, 3, 4, 4), "loss.perceptual_loss.lin0.model.1.weight": (1, 64, 1, 1),
             "loss.logvar": ()}


def save_taming(path, sd, extra=True):
    """A Lightning checkpoint as taming releases it: weights (with loss.*) under
    state_dict, a ModelCheckpoint callback keyed by its class."""
    ckpt = {"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
            "state_dict": {**sd, **{k: torch.randn(s) for k, s in LOSS_KEYS.items()}}}
    if extra:
        mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

        class ModelCheckpoint:
            pass

        ModelCheckpoint.__module__ = mod.__name__
        ModelCheckpoint.__qualname__ = "ModelCheckpoint"
        mod.ModelCheckpoint = ModelCheckpoint
        names = ["pytorch_lightning", "pytorch_lightning.callbacks", mod.__name__]
        saved = {n: sys.modules.get(n) for n in names}
        for n in names[:-1]:
            sys.modules[n] = types.ModuleType(n)
        sys.modules[mod.__name__] = mod
        try:
            ckpt["callbacks"] = {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "best_model_path": "x"}}
            torch.save(ckpt, path)
        finally:
            for n, m in saved.items():
                if m is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = m
    else:
        torch.save(ckpt, path)


def save_llamagen(path, sd, key="ema"):
    """A LlamaGen training checkpoint: model / ema / optimizer / steps / args (a Namespace)."""
    torch.save({"model": {k: v + 1 for k, v in sd.items()} if key == "ema" else sd, **({"ema": sd} if key == "ema" else {}),
                "optimizer": {"state": {}, "param_groups": []}, "steps": 1000,
                "args": argparse.Namespace(vq_model="VQ-16", codebook_size=16384)}, path)


# -- diffusers' VQModel as the independent reference ----------------------------------
def diffusers_vq(ch, ch_mult, nrb, z, res, n_e, e_dim):
    L = len(ch_mult)
    return diffusers.VQModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * (L - 1) + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * (L - 1),
        block_out_channels=tuple(ch * m for m in ch_mult), layers_per_block=nrb, latent_channels=z,
        num_vq_embeddings=n_e, vq_embed_dim=e_dim, norm_num_groups=32, sample_size=res).eval()


def taming_to_diffusers(sd, levels):
    """taming key names -> diffusers' (1x1 attention convs become linear layers)."""
    import re

    out = {}
    for k, v in sd.items():
        nk = k
        nk = re.sub(r"encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", nk)
        nk = re.sub(r"encoder\.down\.(\d+)\.attn\.(\d+)\.", r"encoder.down_blocks.\1.attentions.\2.", nk)
        nk = re.sub(r"encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", nk)
        m = re.match(r"decoder\.up\.(\d+)\.(block|attn|upsample)\.(.*)", nk)
        if m:
            i = levels - 1 - int(m.group(1))
            part = {"block": "resnets", "attn": "attentions", "upsample": "upsamplers"}[m.group(2)]
            rest = m.group(3) if part != "upsamplers" else "0." + m.group(3)
            nk = f"decoder.up_blocks.{i}.{part}.{rest}"
        nk = re.sub(r"mid\.block_1\.", "mid_block.resnets.0.", nk)
        nk = re.sub(r"mid\.block_2\.", "mid_block.resnets.1.", nk)
        nk = re.sub(r"mid\.attn_1\.", "mid_block.attentions.0.", nk)
        nk = nk.replace(".nin_shortcut.", ".conv_shortcut.").replace("norm_out.", "conv_norm_out.")
        if ".attentions." in nk:
            nk = nk.replace(".norm.", ".group_norm.").replace(".q.", ".to_q.").replace(".k.", ".to_k.")
            nk = nk.replace(".v.", ".to_v.").replace(".proj_out.", ".to_out.0.")
            if v.dim() == 4:
                v = v[:, :, 0, 0]
        out[nk] = v
    return out


def _images(res, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, res // 8, res // 8, generator=g)
    return F.interpolate(x, size=res, mode="bilinear", align_corners=False)  # smooth, image-like


def _build(fmt, file, arch, n_e, e_dim):
    from tokzoo.registry import build

    spec = {"name": "released-vq", "format": fmt, "checkpoint": str(file), "resolution": arch["res"],
            "ch": arch["ch"], "ch_mult": list(arch["ch_mult"]), "num_res_blocks": arch["nrb"], "attn_levels": [4],
            "z_channels": arch["z"], "codebook_size": n_e, "embed_dim": e_dim, "l2_norm": fmt == "llamagen"}
    return build("tokenizer", spec).eval()


def _parity(tok, sd_taming, arch, n_e, e_dim, l2):
    ref = diffusers_vq(arch["ch"], arch["ch_mult"], arch["nrb"], arch["z"], arch["res"], n_e, e_dim)
    dsd = taming_to_diffusers(sd_taming, len(arch["ch_mult"]))
    ref.load_state_dict(dsd, strict=True)  # strict: raises on any missing or unexpected key
    # float64 on both sides: the comparison is of the functions computed, not of two
    # float32 summation orders (which differ by up to ~1e-5 at the real depth and width)
    ref, tok = ref.double(), tok.double()
    if l2:  # LlamaGen's cosine codebook: the same route on normalised vectors
        ref.quantize.embedding.weight.data = F.normalize(ref.quantize.embedding.weight.data, dim=-1)
    x = _images(arch["res"]).double()
    with torch.no_grad():
        h = ref.encode(x * 2 - 1).latents
        if l2:
            h = F.normalize(h, dim=1)
        _, _, (_, _, ref_idx) = ref.quantize(h)
        b, c, hh, ww = h.shape
        z_q = ref.quantize.get_codebook_entry(ref_idx.reshape(-1), (b, hh, ww, c))
        ref_rec = (ref.decode(z_q, force_not_quantize=True).sample + 1) / 2  # both in image space [0, 1]
        codes = tok.encode(x)
        rec = tok.decode_codes(codes)
    assert torch.equal(codes.levels["code"].reshape(-1), ref_idx.reshape(-1))
    print(f"max |recon - diffusers| = {float((rec - ref_rec).abs().max()):.2e}", end=" ")
    assert (rec - ref_rec).abs().max() < 1e-10, float((rec - ref_rec).abs().max())  # float32: ~1e-5
    assert rec.std() > 0.01  # not a degenerate output


@pytest.mark.parametrize("arch", [pytest.param(SMALL, id="small"),
                                  pytest.param(REAL, id="real", marks=pytest.mark.paper)])
def test_taming_layout_loads_and_matches_diffusers(tmp_path, arch):
    n_e, e_dim = (64, 16) if arch is SMALL else (16384, 256)
    sd = fill(taming_shapes(arch["ch"], arch["ch_mult"], arch["nrb"], arch["z"], arch["res"], n_e, e_dim))
    save_taming(tmp_path / "last.ckpt", sd)
    tok = _build("taming", tmp_path / "last.ckpt", arch, n_e, e_dim)
    _parity(tok, sd, arch, n_e, e_dim, l2=False)


@pytest.mark.parametrize("arch", [pytest.param(SMALL, id="small"),
                                  pytest.param(REAL, id="real", marks=pytest.mark.paper)])
def test_llamagen_layout_loads_and_matches_diffusers(tmp_path, arch):
    from tokzoo_zoo.released import llamagen_to_taming

    n_e, e_dim = (64, 8) if arch is SMALL else (16384, 8)
    lg = fill(llamagen_shapes(arch["ch"], arch["ch_mult"], arch["nrb"], arch["z"], arch["res"], n_e, e_dim))
    save_llamagen(tmp_path / "vq_ds16_c2i.pt", lg)
    tok = _build("llamagen", tmp_path / "vq_ds16_c2i.pt", arch, n_e, e_dim)
    as_taming = llamagen_to_taming({k: v for k, v in lg.items() if "codebook_used" not in k}, len(arch["ch_mult"]))
    assert set(as_taming) == set(taming_shapes(arch["ch"], arch["ch_mult"], arch["nrb"], arch["z"], arch["res"],
                                               n_e, e_dim))
    _parity(tok, as_taming, arch, n_e, e_dim, l2=True)


def test_llamagen_sections_in_order(tmp_path):
    """Weights under 'ema' win over 'model'; 'model' alone and a bare state dict work."""
    a = SMALL
    lg = fill(llamagen_shapes(a["ch"], a["ch_mult"], a["nrb"], a["z"], a["res"], 64, 8))
    save_llamagen(tmp_path / "ema.pt", lg, key="ema")
    save_llamagen(tmp_path / "model.pt", lg, key="model")
    torch.save(lg, tmp_path / "bare.pt")
    ref = _build("llamagen", tmp_path / "ema.pt", a, 64, 8).state_dict()
    for f in ("model.pt", "bare.pt"):
        got = _build("llamagen", tmp_path / f, a, 64, 8).state_dict()
        assert all(torch.equal(ref[k], got[k]) for k in ref), f


def test_strict_loading_both_ways(tmp_path):
    a = SMALL
    sd = fill(taming_shapes(a["ch"], a["ch_mult"], a["nrb"], a["z"], a["res"], 64, 16))
    extra = dict(sd, **{"encoder.extra.weight": torch.zeros(3)})
    save_taming(tmp_path / "extra.ckpt", extra, extra=False)
    with pytest.raises(CheckpointError, match=r"1 key\(s\) of the file unused \(e.g. encoder.extra.weight"):
        _build("taming", tmp_path / "extra.ckpt", a, 64, 16)
    short = {k: v for k, v in sd.items() if k != "decoder.conv_out.bias"}
    save_taming(tmp_path / "short.ckpt", short, extra=False)
    with pytest.raises(CheckpointError, match=r"1 parameter\(s\) not in the file \(e.g. decoder.conv_out.bias"):
        _build("taming", tmp_path / "short.ckpt", a, 64, 16)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*quantize.embedding.weight: file \(64, 16\)"):
        _build("taming", tmp_path / "extra.ckpt", a, 1024, 16)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_objects_are_refused_never_run(tmp_path):
    a = SMALL
    sd = fill(taming_shapes(a["ch"], a["ch_mult"], a["nrb"], a["z"], a["res"], 64, 16))
    marker = tmp_path / "ran"
    torch.save({"state_dict": sd, "hook": _Evil(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="pathlib.*could run code"):
        _build("taming", tmp_path / "evil.ckpt", a, 64, 16)
    assert not marker.exists()
    torch.save({"state_dict": sd, "hook": _Evil(marker)}, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError):
        _build("taming", tmp_path / "old.ckpt", a, 64, 16)
    assert not marker.exists()
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        _build("taming", tmp_path / "junk.ckpt", a, 64, 16)


def test_missing_file_names_it_and_where():
    from tokzoo.registry import build

    with pytest.raises(WeightsNotFoundError, match="vq_ds16_c2i.pt.*not on this machine.*TOKZOO_WEIGHTS_DIR"):
        build("tokenizer", {"name": "released-vq", "format": "llamagen", "checkpoint": "vq_ds16_c2i.pt",
                            "embed_dim": 8, "l2_norm": True})


def test_resolution_it_cannot_take(tmp_path):
    a = SMALL
    sd = fill(taming_shapes(a["ch"], a["ch_mult"], a["nrb"], a["z"], a["res"], 64, 16))
    save_taming(tmp_path / "t.ckpt", sd)
    tok = _build("taming", tmp_path / "t.ckpt", a, 64, 16)
    with pytest.raises(ValueError, match="72x72 pixels.*multiples of 16"):
        tok.encode(torch.rand(1, 3, 72, 72))
    from tokzoo.registry import build

    with pytest.raises(Exception, match="not a multiple of this tokenizer's downsampling factor 16"):
        build("tokenizer", {"name": "released-vq", "checkpoint": "random", "resolution": 100})


def _small_presets(folder: Path, weights: Path) -> dict[str, Path]:
    """Preset files of the scaled-down layout, inheriting the real presets."""
    a = SMALL
    arch = (f"  resolution: {a['res']}\n  ch: {a['ch']}\n  z_channels: {a['z']}\n")
    out = {}
    for name, parent, n_e, e_dim, fmt, save in (
            ("llamagen-small", "llamagen-vq16", 64, 8, "llamagen", save_llamagen),
            ("taming-small", "taming-f16-16384", 64, 16, "taming", save_taming)):
        shapes = (llamagen_shapes if fmt == "llamagen" else taming_shapes)(
            a["ch"], a["ch_mult"], a["nrb"], a["z"], a["res"], n_e, e_dim)
        save(weights / f"{name}.bin", fill(shapes))
        f = folder / f"{name}.yaml"
        f.write_text(f"inherit: {parent}\nmodel:\n  checkpoint: {name}.bin\n{arch}"
                     f"  codebook_size: {n_e}\n  embed_dim: {e_dim}\n")
        out[name] = f
    return out


@pytest.mark.paper
def test_bench_and_import_end_to_end(tmp_path, cli):
    weights, presets, user = tmp_path / "weights", tmp_path / "presets", tmp_path / "user"
    for d in (weights, presets, user):
        d.mkdir()
    files = _small_presets(presets, weights)
    trained = user / "runs" / "vq"
    out = cli("train", "vq-tiny", "recipe.steps=2", "trainer.batch_size=4", "trainer.eval_images=8",
              f"run_dir={trained}", cwd=user)
    assert out.returncode == 0, out.stderr[-2000:]
    toks = f"{files['llamagen-small']},{files['taming-small']},{trained}"
    out = cli("bench", "--tokenizers", toks, "--weights-dir", str(weights), "--num-images", "4",
              "--metrics", "psnr,ssim,codebook", "--out", str(user / "bench"), cwd=user)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    res = json.loads((user / "bench" / "results.json").read_text())["tokenizers"]
    assert len(res) == 3 and all("psnr" in e["metrics"] for e in res.values())
    assert {e["resolution"] for e in res.values()} == {64, 32}
    # without --weights-dir: one clear error naming the file
    out = cli("bench", "--tokenizers", str(files["llamagen-small"]), "--out", str(user / "b2"), cwd=user)
    assert out.returncode == 2 and "llamagen-small.bin" in out.stderr and "Traceback" not in out.stderr
    # import -> a run folder, read from another directory without the release file
    out = cli("import", str(files["llamagen-small"]), "llamagen-small.bin", "--weights-dir", str(weights),
              "--out", str(user / "runs" / "lg"), cwd=user)
    assert out.returncode == 0, out.stderr[-2000:]
    out = cli("import", str(files["llamagen-small"]), str(weights / "llamagen-small.bin"),
              "--out", str(user / "runs" / "lg"), cwd=user)
    assert out.returncode == 2 and "already holds a run" in out.stderr
    moved = tmp_path / "elsewhere" / "lg"
    moved.parent.mkdir()
    os.replace(user / "runs" / "lg", moved)
    os.replace(weights / "llamagen-small.bin", tmp_path / "gone.bin")
    import tokzoo
    from tokzoo.registry import build

    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        tok = tokzoo.load_tokenizer(moved)
    finally:
        os.chdir(old)
    ref = build("tokenizer", {"name": "released-vq", "format": "llamagen", "checkpoint": str(tmp_path / "gone.bin"),
                              "resolution": 64, "ch": 32, "z_channels": 64, "codebook_size": 64, "embed_dim": 8,
                              "l2_norm": True}).eval()
    x = _images(64)
    assert torch.equal(tok.encode(x).levels["code"], ref.encode(x).levels["code"])
    assert torch.equal(tok.reconstruct(x), ref.reconstruct(x))
    assert tok.config["imported_from"]["file"] == "llamagen-small.bin"
    # docs/zoo.md's fine-tuning: a preset inheriting the ready-made one adds a recipe, and
    # `model.checkpoint=random init_from=RUN` starts from the imported run (lr=0: it comes out equal)
    ft = presets / "lg-ft.yaml"
    ft.write_text(f"inherit: {files['llamagen-small']}\ndata: {{name: shapes, resolution: 64}}\n"
                  "recipe: {name: reconstruction, steps: 1, recon: l2, perceptual_weight: 0.0, disc_weight: 0.0}\n"
                  "trainer: {batch_size: 2, eval_images: 4, lr: 0.0}\n")
    out = cli("train", str(ft), "model.checkpoint=random", f"init_from={moved}", f"run_dir={user / 'runs' / 'ft'}",
              cwd=user)
    assert out.returncode == 0, out.stderr[-2000:]
    tuned = tokzoo.load_tokenizer(user / "runs" / "ft").eval()
    assert torch.equal(tuned.encode(x).levels["code"], ref.encode(x).levels["code"])
    assert torch.equal(tuned.reconstruct(x), ref.reconstruct(x))


@pytest.mark.paper
def test_real_presets_bench_end_to_end(tmp_path, cli):
    """The issue's command, on files in each release's layout at its real shapes:
    tokzoo bench --tokenizers llamagen-vq16,taming-f16-16384,semhitok-tiny --weights-dir DIR."""
    import json

    from test_presets_e2e import ONE_STEP, SMALL_DATA

    weights, user = tmp_path / "weights", tmp_path / "user"
    weights.mkdir()
    user.mkdir()
    r = REAL
    save_llamagen(weights / "vq_ds16_c2i.pt",
                  fill(llamagen_shapes(r["ch"], r["ch_mult"], r["nrb"], r["z"], r["res"], 16384, 8)))
    save_taming(weights / "vqgan_imagenet_f16_16384.ckpt",
                fill(taming_shapes(r["ch"], r["ch_mult"], r["nrb"], r["z"], r["res"], 16384, 256)))
    save_taming(weights / "vqgan_imagenet_f16_1024.ckpt",
                fill(taming_shapes(r["ch"], r["ch_mult"], r["nrb"], r["z"], r["res"], 1024, 256)))
    for preset in ("clip", "semhitok-tiny"):  # semhitok-tiny and its teacher, one step per stage
        out = cli("train", preset, *ONE_STEP, *SMALL_DATA, cwd=user, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
    out = cli("bench", "--tokenizers", "llamagen-vq16,taming-f16-16384,taming-f16-1024,semhitok-tiny",
              "--weights-dir", str(weights), "--num-images", "2", "--metrics", "psnr,ssim,codebook,throughput",
              "--batch-size", "2", cwd=user, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((user / "runs" / "bench" / "results.json").read_text())["tokenizers"]
    assert set(res) == {"llamagen-vq16", "taming-f16-16384", "taming-f16-1024", "semhitok-tiny"}
    assert res["llamagen-vq16"]["info"]["token_grid"] == [16, 16] and res["llamagen-vq16"]["resolution"] == 256
    assert res["taming-f16-1024"]["info"]["vocab"] == {"code": 1024}
    out = cli("import", "taming-f16-16384", "vqgan_imagenet_f16_16384.ckpt", "--weights-dir", str(weights),
              "--out", str(user / "runs" / "taming"), cwd=user)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.paper
def test_diffusers_vq_folder_bench_import_and_reload(tmp_path, cli):
    """A VQModel folder as save_pretrained writes it: codes and reconstructions are
    diffusers' own; import records the folder's config, so the run rebuilds without it."""
    a = SMALL
    ref = diffusers_vq(a["ch"], a["ch_mult"], a["nrb"], a["z"], a["res"], 64, 16)
    ref.load_state_dict(taming_to_diffusers(fill(taming_shapes(a["ch"], a["ch_mult"], a["nrb"], a["z"], a["res"],
                                                               64, 16)), 5))
    folder = tmp_path / "my-vq"
    ref.save_pretrained(str(folder))
    from tokzoo.registry import build

    tok = build("tokenizer", {"name": "diffusers-vq", "path": str(folder)}).eval()
    assert tok.info.resolution == 64 and tok.info.token_grid == (4, 4) and tok.info.vocab == {"code": 64}
    x = _images(64)
    with torch.no_grad():
        h = ref.encode(x * 2 - 1).latents
        _, _, (_, _, idx) = ref.quantize(h)
        codes = tok.encode(x)
        assert torch.equal(codes.levels["code"].reshape(-1), idx.reshape(-1))
        q = ref.quantize.get_codebook_entry(idx.reshape(-1), (2, 4, 4, 16))
        assert torch.equal(tok.decode_codes(codes), (ref.decode(q, force_not_quantize=True).sample + 1) / 2)
    preset = tmp_path / "my-vq.yaml"
    preset.write_text(f"inherit: diffusers-vq\nmodel: {{path: {folder}}}\n")
    out = cli("bench", "--tokenizers", str(preset), "--num-images", "2", "--metrics", "psnr,codebook",
              "--out", str(tmp_path / "bench"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    out = cli("import", "diffusers-vq", str(folder), "--out", str(tmp_path / "runs" / "vq"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    os.replace(folder, tmp_path / "gone")
    import tokzoo

    back = tokzoo.load_tokenizer(tmp_path / "runs" / "vq")
    with torch.no_grad():
        assert torch.equal(back.encode(x).levels["code"], codes.levels["code"])
    out = cli("bench", "--tokenizers", str(preset), "--out", str(tmp_path / "b2"), cwd=tmp_path)
    assert out.returncode == 2 and "not a diffusers model folder" in out.stderr
