"""Released VQ tokenizers, rebuilt from their local checkpoint files.

taming-transformers' VQGAN (Esser et al. 2021) and LlamaGen's VQ-16 (Sun et
al. 2024) share one network: the ``diffusionmodules`` conv encoder/decoder
(ResNet blocks with GroupNorm(32, eps 1e-6) + swish, single-head attention
blocks at the lowest resolution and in the middle, stride-2 convolutions
after a (0,1,0,1) zero pad, nearest upsampling + conv), 1x1 ``quant_conv`` /
``post_quant_conv`` around a nearest-neighbour codebook. They differ in the
codebook (taming: 256-d, Euclidean; LlamaGen: 8-d, both sides l2-normalised)
and in their checkpoint files' key names. :class:`ReleasedVQ` holds the
network under taming's own key names, so a taming state dict loads as it is
and a LlamaGen one through :func:`llamagen_to_taming`. Images are mapped to
``[-1, 1]`` on the way in and back to ``[0, 1]`` on the way out, as both
projects train.

Checkpoints are read by :func:`read_release`: ``torch.load(weights_only=True)``
with an allow-list of the inert non-tensor entries these files really hold;
any other pickled object is refused, never executed. Loading is strict both
ways: a key of the file left unused, or a parameter of the network left
unset, is an error naming it.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.api import (Codes, CodeSpec, LatentSpec, Latents, QuantizerOutput, Tokenizer, TokenizerInfo,
                        TokenizerOutput, load_state_strict, require_pretrained)
from tokzoo.errors import CheckpointError


# -- reading a released file safely ---------------------------------------------------
def _inert(qualified: str) -> type:
    """A stand-in class for a pickled reference to ``qualified``: loading it
    creates an empty object and runs nothing of the original class."""
    module, _, name = qualified.rpartition(".")
    return type(name, (), {"__module__": module, "__init__": lambda self, *a, **k: None,
                           "__setstate__": lambda self, state: None})


#: non-tensor objects released tokenizer checkpoints really hold, read as inert
#: placeholders (Lightning keys its callbacks' states by the callback class)
INERT_GLOBALS = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
                 "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint")
#: real classes that are safe to build: plain attribute bags
SAFE_CLASSES = (argparse.Namespace,)


def read_release(path: str | Path) -> dict[str, Any]:
    """A released checkpoint's top-level dict, read without executing pickled code."""
    path = Path(path)
    allowed = {f"{c.__module__}.{c.__qualname__}" for c in SAFE_CLASSES} | set(INERT_GLOBALS)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a torch zip file: the legacy format is checked by torch.load below
        unsafe = []
        if "zip" not in str(exc).lower() and "archive" not in str(exc).lower():
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({exc})") from None
    refused = sorted(set(unsafe) - allowed)
    if refused:
        raise CheckpointError(
            f"{path} holds pickled objects tokzoo does not load ({', '.join(refused[:5])}"
            f"{', ...' if len(refused) > 5 else ''}): unpickling them could run code. A released "
            "tokenizer needs only its tensors; re-save the state dict alone "
            "(torch.save(ckpt['state_dict'], 'weights.pt')) from a trusted environment.")
    try:
        with torch.serialization.safe_globals([*SAFE_CLASSES, *(_inert(g) for g in INERT_GLOBALS)]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read safely as a checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors or of sections, found {type(obj).__name__}")
    return obj


def _tensors(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def taming_state(ckpt: dict[str, Any]) -> dict[str, Tensor]:
    """A taming VQGAN checkpoint (Lightning: weights under ``state_dict``) ->
    the model's state dict, the training loss's ``loss.*`` entries dropped."""
    sd = ckpt.get("state_dict", ckpt)
    if not _tensors(sd):
        raise CheckpointError("not a taming VQGAN checkpoint: no 'state_dict' of tensors")
    return {k: v for k, v in sd.items() if not k.startswith("loss.")}


_LG_ENC = [(r"^encoder\.conv_blocks\.(\d+)\.res\.", r"encoder.down.\1.block."),
           (r"^encoder\.conv_blocks\.(\d+)\.attn\.", r"encoder.down.\1.attn."),
           (r"^encoder\.conv_blocks\.(\d+)\.downsample\.", r"encoder.down.\1.downsample."),
           (r"^(encoder|decoder)\.mid\.0\.", r"\1.mid.block_1."),
           (r"^(encoder|decoder)\.mid\.1\.", r"\1.mid.attn_1."),
           (r"^(encoder|decoder)\.mid\.2\.", r"\1.mid.block_2.")]


def llamagen_to_taming(sd: dict[str, Tensor], levels: int) -> dict[str, Tensor]:
    """LlamaGen VQ key names -> taming's. The decoder's ``conv_blocks`` run from
    the lowest resolution up (block ``k`` is level ``levels-1-k``); taming's
    ``up`` list is indexed by level."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"^decoder\.conv_blocks\.(\d+)\.(res|attn|upsample)\.?(.*)$", k)
        if m:
            part = {"res": "block", "attn": "attn", "upsample": "upsample"}[m.group(2)]
            k = f"decoder.up.{levels - 1 - int(m.group(1))}.{part}" + (f".{m.group(3)}" if m.group(3) else "")
        else:
            for pat, rep in _LG_ENC:
                k = re.sub(pat, rep, k)
        out[k] = v
    return out


def llamagen_state(ckpt: dict[str, Any], levels: int) -> dict[str, Tensor]:
    """A LlamaGen VQ file -> taming-named state dict: weights under ``ema``,
    else ``model``, else ``state_dict`` (or the file is the state dict);
    the usage buffer ``quantize.codebook_used`` dropped."""
    for key in ("ema", "model", "state_dict"):
        if _tensors(ckpt.get(key)):
            sd = ckpt[key]
            break
    else:
        if not _tensors(ckpt):
            raise CheckpointError("not a LlamaGen VQ checkpoint: no 'ema', 'model' or 'state_dict' of tensors")
        sd = ckpt
    sd = {k.removeprefix("module."): v for k, v in sd.items() if k.removeprefix("module.") != "quantize.codebook_used"}
    return llamagen_to_taming(sd, levels)


FORMATS = {"taming": lambda ckpt, levels: taming_state(ckpt), "llamagen": llamagen_state}


# -- the network (taming's module names) ----------------------------------------------
def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class _Resnet(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _Attn(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q, k, v = (t.reshape(b, c, hh * ww).transpose(1, 2) for t in (self.q(h), self.k(h), self.v(h)))
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, hh, ww))


class _Down(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Up(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _through(level: nn.Module, h: Tensor, resample: str) -> Tensor:
    """One resolution level: each ResNet block (then its attention block, where
    the level has them), then the level's down- or upsampling if it has one."""
    for j, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[j](h)
    return getattr(level, resample)(h) if hasattr(level, resample) else h


def _mid(c: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = _Resnet(c, c), _Attn(c), _Resnet(c, c)
    return mid


class TamingEncoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, attn_levels: Sequence[int],
                 z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(_Resnet(cin, ch * mult))
                cin = ch * mult
                if i in attn_levels:
                    level.attn.append(_Attn(cin))
            if i != len(ch_mult) - 1:
                level.downsample = _Down(cin)
            self.down.append(level)
        self.mid = _mid(cin)
        self.norm_out, self.conv_out = _norm(cin), nn.Conv2d(cin, z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _through(level, h, "downsample")
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class TamingDecoder(nn.Module):
    def __init__(self, ch: int, ch_mult: Sequence[int], num_res_blocks: int, attn_levels: Sequence[int],
                 z_channels: int):
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = _mid(cin)
        ups: list[nn.Module] = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.block.append(_Resnet(cin, ch * ch_mult[i]))
                cin = ch * ch_mult[i]
                if i in attn_levels:
                    level.attn.append(_Attn(cin))
            if i != 0:
                level.upsample = _Up(cin)
            ups.insert(0, level)
        self.up = nn.ModuleList(ups)  # indexed by level, as taming's
        self.norm_out, self.conv_out = _norm(cin), nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(self.up):
            h = _through(level, h, "upsample")
        return self.conv_out(F.silu(self.norm_out(h)))


class ReleasedVQ(Tokenizer):
    """A released taming / LlamaGen VQ tokenizer (see the module docstring).

    ``checkpoint``: the released file (a path, or a file name looked up in
    ``--weights-dir`` / ``TOKZOO_WEIGHTS_DIR``); ``format``: whose key layout
    it has (``taming`` or ``llamagen``); the rest is the architecture, which
    must match the file (strict loading says what does not)."""

    def __init__(self, checkpoint: str = "", format: str = "taming", resolution: int = 256, ch: int = 128,
                 ch_mult: list[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2, attn_levels: list[int] = (4,),
                 z_channels: int = 256, codebook_size: int = 16384, embed_dim: int = 256, l2_norm: bool = False):
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, not '{format}'")
        ch_mult, attn_levels = tuple(ch_mult), tuple(attn_levels)
        self.factor = 2 ** (len(ch_mult) - 1)
        if resolution % self.factor:
            raise ValueError(f"resolution {resolution} is not a multiple of this tokenizer's downsampling "
                             f"factor {self.factor}")
        self.l2_norm = l2_norm
        self.encoder = TamingEncoder(ch, ch_mult, num_res_blocks, attn_levels, z_channels)
        self.decoder = TamingDecoder(ch, ch_mult, num_res_blocks, attn_levels, z_channels)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(codebook_size, embed_dim)
        g = resolution // self.factor
        self._info = TokenizerInfo(resolution, CodeSpec("grid", {"code": codebook_size}, (g, g)))
        path = require_pretrained(checkpoint, what=f"the released {format} VQ tokenizer",
                                  expected="the release's checkpoint file (see docs/zoo.md)", param="checkpoint")
        if path is not None:
            sd = FORMATS[format](read_release(path), len(ch_mult))
            load_state_strict(self, sd, str(path), hint="Check the preset's parameters (codebook_size, embed_dim, "
                              "ch_mult) against the release.")

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    def codebook(self) -> Tensor:
        w = self.quantize.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def _check_size(self, images: Tensor) -> None:
        h, w = images.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"images of {h}x{w} pixels: this tokenizer needs sides that are multiples "
                             f"of {self.factor} (its native resolution is {self.info.resolution})")

    def _features(self, images: Tensor) -> Tensor:
        self._check_size(images)
        return self.quant_conv(self.encoder(images * 2 - 1))

    def _nearest(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``[B,C,h,w]`` -> (code indices ``[B,h,w]``, codebook vectors ``[B,C,h,w]``)."""
        b, c, hh, ww = h.shape
        z = h.permute(0, 2, 3, 1).reshape(-1, c)
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        cb = self.codebook()
        idx = torch.cdist(z, cb).argmin(dim=1)
        q = cb[idx].reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        return idx.reshape(b, hh, ww), q

    def encode(self, images: Tensor) -> Codes:
        idx, _ = self._nearest(self._features(images))
        return Codes({"code": idx}, dict(self.info.vocab), "grid")

    def decode_codes(self, codes: Codes) -> Tensor:
        q = self.codebook()[codes.levels["code"]].permute(0, 3, 1, 2)
        return (self.decoder(self.post_quant_conv(q)) + 1) / 2

    def forward(self, images: Tensor) -> TokenizerOutput:
        h = self._features(images)
        idx, q = self._nearest(h)
        z = F.normalize(h, dim=1) if self.l2_norm else h
        q = z + (q - z).detach()
        losses = {"codebook": F.mse_loss(q, z.detach()), "commitment": 0.25 * F.mse_loss(z, q.detach())}
        codes = Codes({"code": idx}, dict(self.info.vocab), "grid")
        return TokenizerOutput((self.decoder(self.post_quant_conv(q)) + 1) / 2, QuantizerOutput(q, codes, losses))

    token_features_kind = "codebook embeddings"

    def token_features(self, codes: Codes) -> Tensor:
        return self.codebook()[codes.levels["code"]].permute(0, 3, 1, 2)

    def encoder_features(self, images: Tensor) -> Tensor:
        return self._features(images)

    def last_layer(self) -> Tensor:
        return self.decoder.conv_out.weight


# -- diffusers model folders ------------------------------------------------------------
def diffusers_model(class_name: str, path: str, arch: dict | None):
    """The diffusers ``class_name`` (``VQModel``, ``AutoencoderKL``) of the local
    folder ``path`` (``config.json`` + weights, as ``save_pretrained`` writes
    it), run through diffusers itself; nothing is downloaded. ``arch``: a
    config to use instead of the folder's. The folder's config is recorded with
    an imported run, which then rebuilds (weights from the run) without it."""
    try:
        import diffusers
    except ImportError:
        raise CheckpointError("diffusers models need the diffusers library: "
                              "pip install 'tokzoo-zoo[diffusers]'") from None
    from tokzoo.api import is_restoring, referenced_config

    cls = getattr(diffusers, class_name)
    folder = Path(path).expanduser()

    def read(p: str) -> dict:
        if not path or not (folder / "config.json").is_file():
            raise CheckpointError(f"model.path: '{path}' is not a diffusers model folder (no config.json); "
                                  "give the local folder written by save_pretrained (nothing is downloaded)")
        return {k: v for k, v in cls.load_config(p).items()}

    arch = dict(arch or referenced_config(str(folder), read))
    if arch.get("_class_name", class_name) != class_name:
        raise CheckpointError(f"{folder} holds a diffusers {arch['_class_name']}, not a {class_name}")
    if is_restoring():
        return cls.from_config(arch)
    return cls.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False)


def diffusers_grid(arch: dict, resolution: int) -> tuple[int, int, int]:
    """(resolution, downsampling factor, grid side) of a diffusers model's config at ``resolution``
    (0: its ``sample_size``)."""
    res = resolution or int(arch.get("sample_size") or 256)
    factor = 2 ** (len(arch["block_out_channels"]) - 1)
    if res % factor:
        raise ValueError(f"resolution {res} is not a multiple of the model's downsampling factor {factor}")
    return res, factor, res // factor


class DiffusersVQ(Tokenizer):
    """A diffusers ``VQModel`` from a local folder (``config.json`` + weights, as
    ``save_pretrained`` writes it), run through diffusers itself.

    ``path``: the folder (its ``config.json`` is recorded with an imported
    run, which then rebuilds without the folder); ``arch``: a config to use
    instead of the folder's; ``resolution``: the size it runs at (its ``sample_size`` by default)."""

    def __init__(self,
                 path: str = "",  # the local VQModel folder (config.json + weights, as save_pretrained writes)
                 resolution: int = 0,  # the side it runs at (0: the folder's sample_size)
                 arch: dict | None = None):  # a config to use instead of the folder's
        super().__init__()
        self.vq = diffusers_model("VQModel", path, arch)
        self.arch = dict(self.vq.config)
        res, self.factor, g = diffusers_grid(self.arch, resolution)
        self._info = TokenizerInfo(res, CodeSpec("grid", {"code": int(self.arch["num_vq_embeddings"])}, (g, g)))

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    def _indices(self, images: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        h = self.vq.encode(images * 2 - 1).latents
        _, _, (_, _, idx) = self.vq.quantize(h)
        b, c, hh, ww = h.shape
        return idx.reshape(b, hh, ww), (b, hh, ww, c)

    def encode(self, images: Tensor) -> Codes:
        idx, _ = self._indices(images)
        return Codes({"code": idx}, dict(self.info.vocab), "grid")

    def _embeddings(self, codes: Codes) -> Tensor:
        idx = codes.levels["code"]
        b, hh, ww = idx.shape
        return self.vq.quantize.get_codebook_entry(idx.reshape(-1), (b, hh, ww, self.vq.quantize.vq_embed_dim))

    def decode_codes(self, codes: Codes) -> Tensor:
        return (self.vq.decode(self._embeddings(codes), force_not_quantize=True).sample + 1) / 2

    token_features_kind = "codebook embeddings"

    def token_features(self, codes: Codes) -> Tensor:
        return self._embeddings(codes)

    def encoder_features(self, images: Tensor) -> Tensor:
        return self.vq.encode(images * 2 - 1).latents

    def forward(self, images: Tensor) -> TokenizerOutput:
        h = self.vq.encode(images * 2 - 1).latents
        q, loss, (_, _, idx) = self.vq.quantize(h)
        b, _, hh, ww = h.shape
        codes = Codes({"code": idx.reshape(b, hh, ww)}, dict(self.info.vocab), "grid")
        recon = (self.vq.decode(q, force_not_quantize=True).sample + 1) / 2
        return TokenizerOutput(recon, QuantizerOutput(q, codes, {"vq": loss}))


class DiffusersKL(Tokenizer):
    """A diffusers ``AutoencoderKL`` (SD-VAE, SDXL's, SD3's, FLUX's VAE) from a
    local folder, run through diffusers itself: a *continuous* tokenizer, a
    reference row. It encodes to the posterior's mode (its mean; diffusers'
    own reconstruction path, never a sample) and decodes it; the probe reads
    those latents (standardised per channel: diffusers' ``scaling_factor`` and
    ``shift_factor`` would change nothing).

    ``path``: the folder (``vae/`` of a pipeline); ``arch``: a config to use
    instead of the folder's; ``resolution``: the size it runs at (its ``sample_size`` by default)."""

    def __init__(self,
                 path: str = "",  # the local AutoencoderKL folder (config.json + weights), e.g. a pipeline's vae/
                 resolution: int = 0,  # the side it runs at (0: the folder's sample_size)
                 arch: dict | None = None):  # a config to use instead of the folder's
        super().__init__()
        self.vae = diffusers_model("AutoencoderKL", path, arch)
        self.arch = dict(self.vae.config)
        res, self.factor, g = diffusers_grid(self.arch, resolution)
        self._info = TokenizerInfo(res, LatentSpec(int(self.arch["latent_channels"]), (g, g)))

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    def encode(self, images: Tensor) -> Latents:
        return Latents(self.vae.encode(images * 2 - 1).latent_dist.mode())

    def decode_codes(self, latents: Latents) -> Tensor:
        return (self.vae.decode(latents.values).sample + 1) / 2
