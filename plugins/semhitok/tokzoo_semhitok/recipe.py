"""The two-stage SemHiTok recipe.

Stage 1 (``semantic``): the semantic encoder, codebook (EMA) and decoder learn
to reconstruct the frozen teacher's patch features: cosine + L1 loss (+
commitment). Stage 2 (``pixel``): the semantic branch is frozen (no
gradients, no EMA, eval mode) and the pixel encoder, SGHC sub-codebooks and
Enhance Decoder learn to reconstruct pixels: L1 (or L2) + LPIPS + PatchGAN
(+ SGHC commitment). Semantic and pixel training are decoupled: stage 2
cannot change a semantic token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tokzoo.train import Stage, StepResult
from tokzoo.train import losses as L
from tokzoo.train.recipes import PixelLossConfig, PixelRecipe


@dataclass
class SemHiTokRecipeConfig(PixelLossConfig):
    stage1_steps: int = 100000
    stage2_steps: int = 400000
    stage1_lr: float = 0.0  # 0: the trainer's lr
    cosine_weight: float = 1.0
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    disc_weight: float = 0.5
    disc_start: int = 20000  # counted within stage 2


class SemHiTokRecipe(PixelRecipe):
    """Parameters: :class:`SemHiTokRecipeConfig` (the one place their defaults live)."""

    config_class = SemHiTokRecipeConfig

    def __init__(self, **params):
        cfg = SemHiTokRecipeConfig(**params)
        super().__init__(cfg)
        self.s1, self.s2, self.s1_lr = cfg.stage1_steps, cfg.stage2_steps, cfg.stage1_lr or None
        self.cw, self.l1w = cfg.cosine_weight, cfg.l1_weight

    def stages(self):
        return [Stage("semantic", self.s1, ["semantic"], lr=self.s1_lr), Stage("pixel", self.s2, ["pixel"])]

    def reconstructs(self, stage):
        return stage.name == "pixel"

    def disc_clock(self, ctx):
        return ctx.stage_step  # disc_start counts within stage 2

    def setup(self, tokenizer, stage, device):
        self.stage_name = stage.name
        tokenizer.freeze_semantic(stage.name == "pixel")
        super().setup(tokenizer, stage, device)

    @torch.no_grad()
    def evaluate(self, model, train_set, val_set, device):
        """Stage 1: mean cosine similarity of the semantic branch's reconstruction to the
        teacher's features on held-out images; stage 2: the trainer's pixel PSNR."""
        if getattr(self, "stage_name", "semantic") != "semantic":
            return None
        was = model.training
        model.eval()
        n = min(64, len(val_set))
        x = torch.stack([val_set[i]["image"] for i in range(n)]).to(device)
        t, _, s = model.semantic_forward(x)
        model.train(was)
        return {"eval/teacher_cosine": float(torch.nn.functional.cosine_similarity(s, t, dim=1).mean())}

    def generator_step(self, model, tokenizer, batch, ctx):
        x = batch["image"]
        if ctx.stage.name == "semantic":
            out = model(x, branch="semantic")
            t, s = out.extras["teacher"], out.extras["semantic_recon"]
            terms = {"cosine": self.cw * L.cosine_distill_loss(s, t), "l1": self.l1w * (s - t).abs().mean()}
            terms.update(out.quant.losses)
            return StepResult(sum(terms.values()), terms)
        out = model(x)
        terms = self.pixel_terms(tokenizer, out.reconstruction, x, ctx)
        terms.update({k: v for k, v in out.quant.losses.items() if k.startswith("pixel_")})
        return StepResult(sum(terms.values()), terms, out.reconstruction)
