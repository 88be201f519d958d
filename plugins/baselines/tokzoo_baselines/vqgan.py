"""``vqgan``: the taming / LlamaGen VQ tokenizer.

Paper size follows LlamaGen VQ-16: ResNet conv encoder/decoder with channels
128 and multipliers (1,1,2,2,4) (16x downsampling), a 16384-entry codebook of
dimension 8 with l2-normalised codes, beta = 0.25. Trained by core's
``reconstruction`` recipe with L2 + LPIPS + PatchGAN (delayed start).
"""
from __future__ import annotations

from tokzoo.api import ComposedTokenizer
from tokzoo.nn import ConvDecoder, ConvEncoder, VectorQuantizer


def build_vqgan(resolution: int = 256, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                num_res_blocks: int = 2, z_channels: int = 256, codebook_size: int = 16384, codebook_dim: int = 8,
                beta: float = 0.25, l2_norm: bool = True) -> ComposedTokenizer:
    """A VQGAN: conv encoder -> 1x1 to ``codebook_dim`` -> VQ -> 1x1 -> conv decoder."""
    enc = ConvEncoder(ch, ch_mult, num_res_blocks, z_channels)
    dec = ConvDecoder(ch, ch_mult, num_res_blocks, z_channels)
    vq = VectorQuantizer(codebook_size, codebook_dim, beta, l2_norm=l2_norm)
    return ComposedTokenizer(enc, vq, dec, resolution, quant_dim=codebook_dim, decoder_in=z_channels)
