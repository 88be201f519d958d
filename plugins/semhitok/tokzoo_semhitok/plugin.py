"""Entry point of tokzoo-semhitok: registers its components with tokzoo (by
name, ``"module:attr"``: imported when first built, so listing them is fast)."""
from pathlib import Path

import tokzoo


def semantic_vq(codebook_size: int = 24576, dim: int = 32, decay: float = 0.99, restart_every: int = 100):
    """The semantic codebook: l2-normalised low-dim VQ with EMA updates and restarts."""
    from tokzoo.nn import VectorQuantizer

    return VectorQuantizer(codebook_size, dim, 0.25, l2_norm=True, ema=True, decay=decay, restart_unused=True,
                           restart_every=restart_every, level="semantic")


def pixel_encoder(ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                  z_channels: int = 256):
    """SemHiTok's pixel encoder: the conv encoder at its paper size, on the semantic token grid."""
    from tokzoo.nn import ConvEncoder

    return ConvEncoder(ch, ch_mult, num_res_blocks, z_channels)


@tokzoo.hookimpl
def tokzoo_register_encoders(register):
    register("semantic-teacher", "tokzoo_semhitok.teacher:SemanticTeacher",
             "frozen pretrained semantic encoder (open_clip or timm, local weights)")
    register("pixel-encoder", pixel_encoder, "SemHiTok's pixel encoder (conv, on the semantic token grid)")


@tokzoo.hookimpl
def tokzoo_register_quantizers(register):
    register("semantic-vq", semantic_vq, "SemHiTok semantic codebook (EMA, l2-normalised, restarts)")
    register("sghc", "tokzoo_semhitok.sghc:SGHCQuantizer",
             "Semantic-Guided Hierarchical Codebook: m texture sub-codes per semantic code")


@tokzoo.hookimpl
def tokzoo_register_decoders(register):
    register("enhance-decoder", "tokzoo_semhitok.tokenizer:EnhanceDecoder",
             "SemHiTok Enhance Decoder: pixels from [semantic ; pixel] features")


@tokzoo.hookimpl
def tokzoo_register_tokenizers(register):
    register("semhitok", "tokzoo_semhitok.tokenizer:SemHiTok",
             "SemHiTok: semantic codebook + SGHC texture sub-codebooks + Enhance Decoder")


@tokzoo.hookimpl
def tokzoo_register_recipes(register):
    register("semhitok", "tokzoo_semhitok.recipe:SemHiTokRecipe",
             "two stages: semantic codebook, then SGHC + Enhance Decoder (decoupled)")


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("semhitok", Path(__file__).parent / "configs")
