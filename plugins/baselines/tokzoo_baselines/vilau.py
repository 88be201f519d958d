"""``vilau``: a VILA-U-style unified tokenizer.

A vision tower (an ``openclip`` encoder, e.g. initialised from a SigLIP file
or from the tiny teacher ``tokzoo train clip``) produces patch features; a
residual quantizer (shared codebook, EMA, restarts) discretises them; a conv
decoder reconstructs pixels from the quantized features. The ``vilau``
recipe trains tower, quantizer and decoder jointly with a contrastive loss
(quantized features, mean-pooled and projected through the tower's head,
against the frozen text tower) plus reconstruction (+ LPIPS + GAN), 1:1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tokzoo.api import (RANDOM, Codes, CodeSpec, Spec, Tokenizer, TokenizerInfo, TokenizerOutput, current_spec_path,
                        is_restoring)
from tokzoo.errors import WeightsNotFoundError
from tokzoo.nn import ConvDecoder
from tokzoo.registry import build
from tokzoo.train import Stage, StepResult
from tokzoo.train import losses as L
from tokzoo.train.recipes import PixelLossConfig, PixelRecipe, captions_for

from tokzoo_baselines.rvq import ResidualVQ


class VilaUTokenizer(Tokenizer):
    def __init__(self, resolution: int = 256,
                 tower: Spec.encoder = {"name": "openclip", "arch": "ViT-B-16-SigLIP-256"},  # noqa: B006 (read only)
                 codebook_size: int = 16384, depth: int = 4, code_dim: int = 256, decay: float = 0.99,
                 restart_every: int = 100, beta: float = 0.25, decoder_ch: int = 128,
                 decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), decoder_res_blocks: int = 2):
        super().__init__()
        spec = {"name": tower} if isinstance(tower, str) else dict(tower)
        if (spec.get("name") == "openclip" and not spec.get("checkpoint") and spec.get("arch", "tiny") == "tiny"
                and spec.get("pretrained") != RANDOM and not is_restoring()):
            where = f"{current_spec_path()}.tower"
            raise WeightsNotFoundError(
                f"the VILA-U tower starts from a pretrained image-text model, and none was given: set "
                f"{where}.checkpoint=RUN (a run of `tokzoo train clip`, e.g. runs/clip), or {where}.arch=NAME with "
                f"{where}.pretrained=FILE (a local open_clip checkpoint). To start from a deliberately random "
                f"tower, set {where}.pretrained={RANDOM} (recorded, and flagged in bench tables).")
        self.tower = build("encoder", tower)
        if not hasattr(self.tower, "embed_text"):
            from tokzoo.errors import ConfigError

            raise ConfigError("vilau: the tower must be an image-text encoder such as 'openclip'")
        self.resolution = resolution
        self.pre_quant = nn.Conv2d(self.tower.out_channels, code_dim, 1)
        self.quantizer = ResidualVQ(codebook_size, code_dim, depth, beta, decay, True, restart_every)
        self.post_quant = nn.Conv2d(code_dim, self.tower.out_channels, 1)
        self.decoder = ConvDecoder(decoder_ch, decoder_ch_mult, decoder_res_blocks, z_channels=self.tower.out_channels)
        grid = self.tower.grid
        up = self.decoder.upsample
        if grid * up != resolution:
            from tokzoo.errors import ConfigError

            raise ConfigError(f"vilau: tower grid {grid} x decoder upsampling {up} = {grid * up}, "
                              f"but resolution is {resolution}; change decoder_ch_mult")
        self._info = TokenizerInfo(resolution, CodeSpec("residual", self.quantizer.vocab, (grid, grid)))

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    def _quantize(self, images: Tensor):
        if tuple(images.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"vilau takes {self.resolution}x{self.resolution} images (its tower's position grid "
                             f"is fixed at that size), not {images.shape[-2]}x{images.shape[-1]}")
        return self.quantizer(self.pre_quant(self.tower(images)))

    def forward(self, images: Tensor) -> TokenizerOutput:
        q = self._quantize(images)
        feats = self.post_quant(q.quantized)
        return TokenizerOutput(self.decoder(feats), q, {"semantic": feats})

    def encode(self, images: Tensor) -> Codes:
        return self._quantize(images).codes

    def decode_codes(self, codes: Codes) -> Tensor:
        return self.decoder(self.post_quant(self.quantizer.lookup(codes)))

    token_features_kind = "residual levels summed, through post_quant (the tower's feature space)"

    def token_features(self, codes: Codes) -> Tensor:
        """The residual tokens' embeddings summed, in the tower's feature space."""
        return self.post_quant(self.quantizer.lookup(codes))

    def encoder_features(self, images: Tensor) -> Tensor:
        """The tower's continuous features, before the residual quantizer."""
        return self.pre_quant(self.tower(images))

    def image_embedding(self, feats: Tensor) -> Tensor:
        """Quantized features ``[B,C,g,g]`` -> the tower's projected embedding space."""
        visual = self.tower.model.visual
        pooled = feats.mean(dim=(2, 3))
        if self.tower.trunk is None:
            pooled = visual.ln_post(pooled)
            return pooled @ visual.proj if visual.proj is not None else pooled
        return visual.head(pooled) if hasattr(visual, "head") else pooled

    def last_layer(self) -> Tensor:
        return self.decoder.last_layer()

    def frozen_prefixes(self) -> tuple[str, ...]:
        """The tower's text side (text transformer, embeddings, logit scale): the
        recipe never trains it, so it is stored once per run."""
        visual = {id(t) for t in [*self.tower.model.visual.parameters(), *self.tower.model.visual.buffers()]}
        named = [*self.tower.named_parameters(), *self.tower.named_buffers()]
        return tuple(f"tower.{n}" for n, t in named if id(t) not in visual)

    def trainable_groups(self):
        visual = list(self.tower.model.visual.parameters())
        vis_ids = {id(p) for p in visual}
        return {
            "vision": visual,
            "text": [p for p in self.tower.parameters() if id(p) not in vis_ids],
            "quantizer": list(self.pre_quant.parameters()) + list(self.quantizer.parameters()),
            "decoder": list(self.post_quant.parameters()) + list(self.decoder.parameters()),
            "all": list(self.parameters()),
        }


@dataclass
class VilaURecipeConfig(PixelLossConfig):
    steps: int = 1000
    contrastive_weight: float = 1.0
    prompt: str = "a photo of a {}"


class VilaURecipe(PixelRecipe):
    """One joint stage: contrastive (text tower frozen) + reconstruction."""

    config_class = VilaURecipeConfig

    def __init__(self, **params):
        cfg = VilaURecipeConfig(**params)  # the one place the parameters and defaults live
        super().__init__(cfg)
        self.steps, self.cw, self.prompt = cfg.steps, cfg.contrastive_weight, cfg.prompt

    def stages(self):
        return [Stage("joint", self.steps, ["vision", "quantizer", "decoder"])]

    def generator_step(self, model, tokenizer, batch, ctx):
        x = batch["image"]
        out = model(x)
        terms = self.pixel_terms(tokenizer, out.reconstruction, x, ctx)
        img = tokenizer.image_embedding(out.extras["semantic"])
        with torch.no_grad():
            txt = tokenizer.tower.embed_text(captions_for(batch, self.prompt))
        terms["contrastive"] = self.cw * L.clip_contrastive_loss(img, txt, tokenizer.tower.model.logit_scale.exp().detach())
        terms.update(out.quant.losses)
        return StepResult(sum(terms.values()), terms, out.reconstruction)
