"""SemHiTok: semantic codebook (stage 1) + SGHC texture sub-codebooks and the
Enhance Decoder (stage 2).

- Semantic branch: frozen teacher -> semantic encoder (1x1 + ResNet blocks)
  -> low-dimensional l2-normalised VQ with EMA codebook (``K`` codes) ->
  semantic decoder, trained to reconstruct the teacher's features.
- Pixel branch: conv pixel encoder on the same token grid -> SGHC quantizer
  (the ``m`` sub-codes of each position's semantic code) -> Enhance Decoder,
  which decodes pixels from the semantic decoder's features and the pixel
  quantized features concatenated along channels.

One token per grid position: ``h = i * m + j``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tokzoo.api import Codes, CodeSpec, QuantizerOutput, Spec, Tokenizer, TokenizerInfo, TokenizerOutput
from tokzoo.errors import ConfigError
from tokzoo.nn import ConvDecoder, ConvEncoder, ResBlock, VectorQuantizer
from tokzoo.registry import build

from tokzoo_semhitok.sghc import SGHCQuantizer


class SemanticCodec(nn.Module):
    """Teacher features ``[B,Ct,g,g]`` -> low-dim codes -> reconstructed teacher features."""

    def __init__(self, teacher_dim: int, hidden: int, code_dim: int, codebook_size: int, decay: float,
                 restart_every: int, blocks: int = 2):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(teacher_dim, hidden, 1), *[ResBlock(hidden, hidden) for _ in range(blocks)],
                                     nn.Conv2d(hidden, code_dim, 1))
        self.quantizer = VectorQuantizer(codebook_size, code_dim, 0.25, l2_norm=True, ema=True, decay=decay,
                                         restart_unused=True, restart_every=restart_every, level="semantic")
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, hidden, 1), *[ResBlock(hidden, hidden) for _ in range(blocks)],
                                     nn.Conv2d(hidden, teacher_dim, 1))


class EnhanceDecoder(nn.Module):
    """[semantic features ; pixel quantized features] -> images ``[B,3,H,W]``, nominally in ``[0,1]``."""

    def __init__(self, semantic_dim: int = 64, pixel_dim: int = 8, z_channels: int = 256, ch: int = 128,
                 ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2):
        super().__init__()
        self.in_channels = semantic_dim + pixel_dim
        self.fuse = nn.Conv2d(semantic_dim + pixel_dim, z_channels, 1)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, z_channels)
        self.upsample = self.decoder.upsample

    def forward(self, semantic: Tensor, pixel: Tensor) -> Tensor:
        return self.decoder(self.fuse(torch.cat([semantic, pixel], dim=1)))

    def last_layer(self) -> Tensor:
        return self.decoder.last_layer()


class SemHiTok(Tokenizer):
    def __init__(self, resolution: int = 256,
                 teacher: Spec.encoder = {"name": "semantic-teacher", "arch": "ViT-L-16-SigLIP-256"},  # noqa: B006
                 semantic_codebook_size: int = 24576, semantic_code_dim: int = 32, semantic_hidden: int = 512,
                 sub_codebook_size: int = 8, pixel_code_dim: int = 8, pixel_ch: int = 128,
                 pixel_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), pixel_res_blocks: int = 2,
                 pixel_z_channels: int = 256, decoder_ch: int = 128, decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 decoder_res_blocks: int = 2, decoder_z_channels: int = 256, semantic_feature_dim: int = 64,
                 decay: float = 0.99, restart_every: int = 100):
        """K = ``semantic_codebook_size`` semantic codes, m = ``sub_codebook_size``
        texture sub-codes each (K * m = 196,608 at paper size); the teacher is a
        nested encoder spec (read only)."""
        super().__init__()
        self.teacher = build("encoder", teacher)
        self.teacher.requires_grad_(False)
        g = self.teacher.grid
        self.resolution = resolution
        self.semantic = SemanticCodec(self.teacher.out_channels, semantic_hidden, semantic_code_dim,
                                      semantic_codebook_size, decay, restart_every)
        self.pixel_encoder = ConvEncoder(pixel_ch, pixel_ch_mult, pixel_res_blocks, pixel_z_channels)
        if resolution // self.pixel_encoder.downsample != g:
            raise ConfigError(f"semhitok: the pixel encoder's grid ({resolution}/{self.pixel_encoder.downsample}) must "
                              f"equal the teacher's token grid ({g}); change pixel_ch_mult")
        self.pixel_pre = nn.Conv2d(pixel_z_channels, pixel_code_dim, 1)
        self.sghc = SGHCQuantizer(semantic_codebook_size, sub_codebook_size, pixel_code_dim, decay=decay,
                                  restart_every=restart_every)
        self.semantic_proj = nn.Conv2d(self.teacher.out_channels, semantic_feature_dim, 1)
        self.enhance = EnhanceDecoder(semantic_feature_dim, pixel_code_dim, decoder_z_channels, decoder_ch,
                                      decoder_ch_mult, decoder_res_blocks)
        if g * self.enhance.upsample != resolution:
            raise ConfigError(f"semhitok: grid {g} x decoder upsampling {self.enhance.upsample} != resolution "
                              f"{resolution}; change decoder_ch_mult")
        self._info = TokenizerInfo(resolution, CodeSpec("hierarchical", self.sghc.vocab, (g, g)))
        self.semantic_frozen = False
        # the semantic branch's own untrainable parameters (its EMA codebook): unfreezing never turns them on
        self._semantic_fixed = {id(p) for p in self.semantic.parameters() if not p.requires_grad}

    # -- stages -------------------------------------------------------------------------------
    def freeze_semantic(self, frozen: bool = True) -> None:
        """Stage 2: the semantic branch stops changing (no gradients, no EMA, no restarts)."""
        self.semantic_frozen = frozen
        for p in self.semantic.parameters():
            p.requires_grad_(not frozen and id(p) not in self._semantic_fixed)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        if self.semantic_frozen:
            self.semantic.eval()
        return self

    def trainable_groups(self):
        pixel = [*self.pixel_encoder.parameters(), *self.pixel_pre.parameters(), *self.sghc.parameters(),
                 *self.semantic_proj.parameters(), *self.enhance.parameters()]
        return {"semantic": list(self.semantic.parameters()), "pixel": pixel,
                "all": list(self.semantic.parameters()) + pixel}

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    def frozen_prefixes(self) -> tuple[str, ...]:
        return ("teacher.",)  # the pretrained teacher: stored once per run

    # -- branches -----------------------------------------------------------------------------
    def semantic_forward(self, images: Tensor) -> tuple[Tensor, QuantizerOutput, Tensor]:
        """(teacher features, semantic quantizer output, reconstructed teacher features)."""
        t = self.teacher(images)
        q = self.semantic.quantizer(self.semantic.encoder(t))
        return t, q, self.semantic.decoder(q.quantized)

    def pixel_forward(self, images: Tensor, semantic_codes: Tensor, semantic_features: Tensor):
        qp = self.sghc(self.pixel_pre(self.pixel_encoder(images)), semantic_codes)
        return qp, self.enhance(self.semantic_proj(semantic_features), qp.quantized)

    def _check_size(self, images: Tensor) -> None:
        if tuple(images.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"semhitok takes {self.resolution}x{self.resolution} images (its teacher's position "
                             f"grid and codes are fixed at that size), not {images.shape[-2]}x{images.shape[-1]}")

    def forward(self, images: Tensor, branch: str = "both") -> TokenizerOutput:
        """Training pass; ``branch="semantic"`` runs only the semantic branch (stage 1),
        with the reconstructed teacher features in ``extras`` and no image."""
        self._check_size(images)
        t, qs, sem = self.semantic_forward(images)
        if branch == "semantic":
            return TokenizerOutput(None, qs, {"teacher": t, "semantic_recon": sem, "semantic_quant": qs})
        qp, recon = self.pixel_forward(images, qs.codes.levels["semantic"], sem.detach() if self.semantic_frozen else sem)
        merged = QuantizerOutput(qp.quantized, qp.codes, {**qs.losses, **qp.losses}, {**qs.stats, **qp.stats})
        return TokenizerOutput(recon, merged, {"teacher": t, "semantic_recon": sem, "semantic_quant": qs})

    def encode(self, images: Tensor) -> Codes:
        semantic = self.encode_semantic(images).levels["semantic"]
        return self.sghc(self.pixel_pre(self.pixel_encoder(images)), semantic).codes

    def semantic_features(self, codes: Codes) -> Tensor:
        idx = codes.levels["semantic"]
        q = self.semantic.quantizer.lookup(Codes({"semantic": idx}, {"semantic": self.semantic.quantizer.codebook_size}))
        return self.semantic.decoder(q)

    def decode_codes(self, codes: Codes) -> Tensor:
        return self.enhance(self.semantic_proj(self.semantic_features(codes)), self.sghc.lookup(codes))

    token_features_kind = "semantic decoder on the semantic codes (teacher features rebuilt)"

    def token_features(self, codes: Codes) -> Tensor:
        """Teacher features rebuilt by the semantic decoder from the semantic codes."""
        return self.semantic_features(codes)

    def encoder_features(self, images: Tensor) -> Tensor:
        """The frozen teacher's own features (what the semantic codebook quantizes)."""
        self._check_size(images)
        return self.teacher(images)

    def encode_semantic(self, images: Tensor) -> Codes:
        """Semantic codes only (the semantic decoder is not run)."""
        self._check_size(images)
        return self.semantic.quantizer(self.semantic.encoder(self.teacher(images))).codes

    def last_layer(self) -> Tensor:
        return self.enhance.last_layer()
