"""Core's own components, registered through the same hooks as any plugin."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokzoo import hookimpl
from tokzoo.api import ComposedTokenizer
from tokzoo.data.imagefolder import ImageFolderConfig, ImageFolderDataset
from tokzoo.data.shapes import ShapesConfig, ShapesDataset
from tokzoo.data.synthetic import SyntheticConfig, SyntheticDataset
from tokzoo.nn import ConvDecoder, ConvEncoder, VectorQuantizer


@dataclass
class ConvConfig:
    ch: int = 64
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    z_channels: int = 64


@dataclass
class VQConfig:
    codebook_size: int = 512
    dim: int = 8
    beta: float = 0.25
    l2_norm: bool = True
    ema: bool = False
    decay: float = 0.99
    restart_unused: bool = False
    restart_every: int = 100


@dataclass
class ComposedConfig:
    resolution: int = 32
    encoder: Any = field(default_factory=lambda: {"name": "conv"})
    quantizer: Any = field(default_factory=lambda: {"name": "vq"})
    decoder: Any = field(default_factory=lambda: {"name": "conv"})


ComposedConfig.__nested_specs__ = {"encoder": "encoder", "quantizer": "quantizer", "decoder": "decoder"}


def build_composed(resolution: int = 32, encoder: Any = None, quantizer: Any = None, decoder: Any = None) -> ComposedTokenizer:
    """Encoder + quantizer + decoder from the registry, joined by 1x1 projections."""
    from tokzoo.registry import build

    enc = build("encoder", encoder or "conv")
    quant = build("quantizer", quantizer or "vq")
    dec = build("decoder", decoder or "conv")
    if resolution % enc.downsample:
        from tokzoo.errors import ConfigError

        raise ConfigError(f"resolution {resolution} is not divisible by the encoder's downsampling {enc.downsample}")
    return ComposedTokenizer(enc, quant, dec, resolution, quant_dim=quant.dim, decoder_in=dec.in_channels)


@hookimpl
def tokzoo_register_encoders(register):
    from tokzoo.nn.clip import OpenClipConfig, build_openclip

    register("conv", ConvEncoder, "taming/LlamaGen-style ResNet conv encoder", config=ConvConfig)
    register("openclip", build_openclip, "open_clip image-text model (tiny custom, or a named arch from a local file)",
             config=OpenClipConfig)


@hookimpl
def tokzoo_register_quantizers(register):
    register("vq", VectorQuantizer, "nearest-neighbour VQ, l2-normalised low-dim lookup, straight-through",
             config=VQConfig)


@hookimpl
def tokzoo_register_decoders(register):
    register("conv", ConvDecoder, "taming/LlamaGen-style ResNet conv decoder", config=ConvConfig)


@hookimpl
def tokzoo_register_tokenizers(register):
    register("composed", build_composed, "generic encoder + quantizer + decoder from the registry",
             config=ComposedConfig)


@hookimpl
def tokzoo_register_datasets(register):
    register("shapes", ShapesDataset, "built-in procedural shapes on photo/texture backgrounds, 10 classes, captions",
             config=ShapesConfig)
    register("imagefolder", ImageFolderDataset, "a folder of images (labels from sub-folders, captions.jsonl)",
             config=ImageFolderConfig)
    register("synthetic", SyntheticDataset, "random smooth images made on the fly (throughput runs; no quality meaning)",
             config=SyntheticConfig)


@hookimpl
def tokzoo_register_recipes(register):
    from tokzoo.train.recipes import ReconstructionConfig, ReconstructionRecipe

    from tokzoo.train.recipes import ClipConfig, ClipRecipe

    register("clip", ClipRecipe, "contrastive image-text training of an openclip model (the tiny teacher)",
             config=ClipConfig)
    register("reconstruction", ReconstructionRecipe,
             "one stage: L1/L2 + LPIPS + PatchGAN (adaptive weight) + quantizer losses", config=ReconstructionConfig)


@hookimpl
def tokzoo_register_metrics(register):
    from tokzoo.bench.metrics import CORE_METRICS

    for name, (cls, description, schema) in CORE_METRICS.items():
        register(name, cls, description, config=schema)


@hookimpl
def tokzoo_register_presets(register):
    from pathlib import Path

    register("tokzoo", Path(__file__).parent / "configs")  # vq-tiny, clip: shipped in the wheel
