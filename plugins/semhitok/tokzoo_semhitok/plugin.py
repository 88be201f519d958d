"""Entry point of tokzoo-semhitok: registers its components with tokzoo."""
from dataclasses import dataclass, field
from pathlib import Path

import tokzoo


@dataclass
class SemanticVQConfig:
    codebook_size: int = 24576
    dim: int = 32
    decay: float = 0.99
    restart_every: int = 100


@dataclass
class SGHCConfig:
    num_semantic: int = 24576
    sub_size: int = 8
    dim: int = 8
    beta: float = 0.25
    l2_norm: bool = True
    ema: bool = True
    decay: float = 0.99
    restart_every: int = 100


@dataclass
class PixelEncoderConfig:
    ch: int = 128
    ch_mult: list = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    z_channels: int = 256


@dataclass
class EnhanceDecoderConfig:
    semantic_dim: int = 64
    pixel_dim: int = 8
    z_channels: int = 256
    ch: int = 128
    ch_mult: list = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2


def semantic_vq(codebook_size=24576, dim=32, decay=0.99, restart_every=100):
    """The semantic codebook: l2-normalised low-dim VQ with EMA updates and restarts."""
    from tokzoo.nn import VectorQuantizer

    return VectorQuantizer(codebook_size, dim, 0.25, l2_norm=True, ema=True, decay=decay, restart_unused=True,
                           restart_every=restart_every, level="semantic")


@tokzoo.hookimpl
def tokzoo_register_encoders(register):
    from tokzoo.nn import ConvEncoder

    from tokzoo_semhitok.teacher import SemanticTeacher, TeacherConfig

    register("semantic-teacher", SemanticTeacher, "frozen pretrained semantic encoder (open_clip or timm, local weights)",
             config=TeacherConfig)
    register("pixel-encoder", ConvEncoder, "SemHiTok's pixel encoder (conv, on the semantic token grid)",
             config=PixelEncoderConfig)


@tokzoo.hookimpl
def tokzoo_register_quantizers(register):
    from tokzoo_semhitok.sghc import SGHCQuantizer

    register("semantic-vq", semantic_vq, "SemHiTok semantic codebook (EMA, l2-normalised, restarts)",
             config=SemanticVQConfig)
    register("sghc", SGHCQuantizer, "Semantic-Guided Hierarchical Codebook: m texture sub-codes per semantic code",
             config=SGHCConfig)


@tokzoo.hookimpl
def tokzoo_register_decoders(register):
    from tokzoo_semhitok.tokenizer import EnhanceDecoder

    register("enhance-decoder", EnhanceDecoder, "SemHiTok Enhance Decoder: pixels from [semantic ; pixel] features",
             config=EnhanceDecoderConfig)


@tokzoo.hookimpl
def tokzoo_register_tokenizers(register):
    from tokzoo_semhitok.tokenizer import SemHiTok, SemHiTokConfig

    register("semhitok", SemHiTok, "SemHiTok: semantic codebook + SGHC texture sub-codebooks + Enhance Decoder",
             config=SemHiTokConfig)


@tokzoo.hookimpl
def tokzoo_register_recipes(register):
    from tokzoo_semhitok.recipe import SemHiTokRecipe, SemHiTokRecipeConfig

    register("semhitok", SemHiTokRecipe, "two stages: semantic codebook, then SGHC + Enhance Decoder (decoupled)",
             config=SemHiTokRecipeConfig)


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("semhitok", Path(__file__).parent / "configs")
