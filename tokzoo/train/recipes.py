"""Core's generic ``reconstruction`` recipe: one stage of
reconstruction (L1/L2) + LPIPS + PatchGAN (hinge, delayed start, adaptive
weight) + the quantizer's own loss terms. VQGAN-style training is this recipe."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tokzoo.api import Tokenizer
from tokzoo.errors import ConfigError
from tokzoo.weights import KNOWN_FILES, find_weights
from tokzoo.train import losses as L
from tokzoo.train.recipe import Recipe, Stage, StepContext, StepResult


@dataclass
class PixelLossConfig:
    """The parameters of :class:`ReconstructionLosses`, shared by every recipe that reconstructs pixels."""

    recon: str = "l1"  # l1 | l2
    recon_weight: float = 1.0
    perceptual_weight: float = 0.0  # > 0 needs the LPIPS backbone weights on this machine
    perceptual_net: str = "alex"
    disc_weight: float = 0.0  # 0 disables the GAN
    disc_start: int = 0
    disc_channels: int = 64
    disc_layers: int = 3
    adaptive_disc_weight: bool = True


@dataclass
class ReconstructionConfig(PixelLossConfig):
    steps: int = 1000
    quant_weight: float = 1.0
    train: list[str] = field(default_factory=lambda: ["all"])


class ReconstructionLosses:
    """The pixel-side losses shared by every recipe that reconstructs images."""

    def __init__(self, cfg: PixelLossConfig):
        self.recon, self.recon_weight = cfg.recon, cfg.recon_weight
        self.perceptual_weight, self.perceptual_net = cfg.perceptual_weight, cfg.perceptual_net
        self.disc_weight, self.disc_start, self.adaptive = cfg.disc_weight, cfg.disc_start, cfg.adaptive_disc_weight
        self.disc = L.PatchDiscriminator(cfg.disc_channels, cfg.disc_layers) if cfg.disc_weight > 0 else None
        self.lpips: nn.Module | None = None
        if cfg.perceptual_weight > 0:  # refuse now, before a run folder is written, if the backbone is missing
            if cfg.perceptual_net not in ("alex", "vgg"):
                raise ConfigError(f"recipe.perceptual_net must be 'alex' or 'vgg', not '{cfg.perceptual_net}'")
            find_weights(KNOWN_FILES[{"alex": "alexnet", "vgg": "vgg16"}[cfg.perceptual_net]],
                         f"the LPIPS loss (recipe.perceptual_weight={cfg.perceptual_weight}; set it to 0 to train "
                         f"without it)")

    def setup(self, device: torch.device) -> None:
        if self.perceptual_weight > 0 and self.lpips is None:
            self.lpips = L.load_lpips(self.perceptual_net).to(device)
        if self.disc is not None:
            self.disc.to(device)

    def generator_terms(self, recon: Tensor, target: Tensor, last_layer: Tensor | None, step: int) -> dict[str, Tensor]:
        terms = {"recon": self.recon_weight * L.reconstruction_loss(recon, target, self.recon)}
        nll = terms["recon"]
        if self.lpips is not None:
            terms["perceptual"] = self.perceptual_weight * self.lpips(recon, target).mean()
            nll = nll + terms["perceptual"]
        if self.disc is not None and step >= self.disc_start:
            g = L.hinge_g_loss(self.disc(recon))
            if self.adaptive and last_layer is not None and torch.is_grad_enabled():
                w = L.adaptive_gan_weight(nll, g, last_layer)
            else:
                w = torch.tensor(1.0, device=recon.device)
            terms["gan"] = self.disc_weight * w * g
        return terms

    def discriminator_terms(self, recon: Tensor, target: Tensor, step: int) -> dict[str, Tensor] | None:
        if self.disc is None or step < self.disc_start:
            return None
        return {"disc": L.hinge_d_loss(self.disc(target), self.disc(recon.detach()))}

    def discriminator_step(self, batch: dict, recon: Tensor, step: int) -> StepResult | None:
        """The discriminator's step for a recipe (None before ``disc_start`` or without a GAN)."""
        terms = self.discriminator_terms(recon, batch["image"], step)
        return None if terms is None else StepResult(sum(terms.values()), terms)


def last_layer_of(tokenizer: Tokenizer) -> Tensor | None:
    fn = getattr(tokenizer, "last_layer", None)
    return fn() if fn is not None else None


class PixelRecipe(Recipe):
    """The base of every recipe that reconstructs pixels: it owns the
    :class:`ReconstructionLosses` (``self.pixel``), sets them up, and gives the
    discriminator, its step and the loss networks; a subclass keeps its stages
    and its generator step (where ``pixel_terms`` gives the pixel-side terms).

    Two questions a multi-stage recipe answers by overriding: which stages
    reconstruct pixels (:meth:`reconstructs`; the others load no LPIPS and
    train no discriminator) and which step ``disc_start`` counts
    (:meth:`disc_clock`: the global step, or e.g. the stage's own)."""

    def __init__(self, cfg: PixelLossConfig):
        self.pixel = ReconstructionLosses(cfg)

    def reconstructs(self, stage: Stage) -> bool:
        return True

    def disc_clock(self, ctx: StepContext) -> int:
        return ctx.step

    def setup(self, tokenizer, stage, device):
        if self.reconstructs(stage):
            self.pixel.setup(device)

    def discriminator(self):
        return self.pixel.disc

    def loss_networks(self) -> list[nn.Module]:
        return [m for m in (self.pixel.lpips, self.pixel.disc) if m is not None]

    def pixel_terms(self, tokenizer: Tokenizer, recon: Tensor, target: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """Reconstruction, LPIPS and adversarial terms of ``recon`` against ``target``."""
        return self.pixel.generator_terms(recon, target, last_layer_of(tokenizer), self.disc_clock(ctx))

    def discriminator_step(self, batch, recon, ctx):
        if not self.reconstructs(ctx.stage):
            return None
        return self.pixel.discriminator_step(batch, recon, self.disc_clock(ctx))


class ReconstructionRecipe(PixelRecipe):
    """One stage training a tokenizer to reconstruct its input (parameters: :class:`ReconstructionConfig`)."""

    config_class = ReconstructionConfig  # subclasses registered without config= inherit it

    def __init__(self, **params):
        cfg = ReconstructionConfig(**params)
        super().__init__(cfg)
        self.steps, self.train, self.quant_weight = cfg.steps, list(cfg.train), cfg.quant_weight

    def stages(self) -> list[Stage]:
        return [Stage("reconstruction", self.steps, self.train)]

    def generator_step(self, model, tokenizer, batch, ctx: StepContext) -> StepResult:
        x = batch["image"]
        out = model(x)
        terms = self.pixel_terms(tokenizer, out.reconstruction, x, ctx)
        for k, v in out.quant.losses.items():
            terms[k] = self.quant_weight * v
        return StepResult(sum(terms.values()), terms, out.reconstruction)


class ClipRecipe(Recipe):
    """Contrastive image-text training of an ``openclip`` model (the tiny teacher).

    Evaluation is the linear probe (:mod:`tokzoo.measures`) on the pooled
    image embedding, so a trained teacher can be told from a random one.
    """

    def __init__(self, steps: int = 500, loss: str = "clip", prompt: str = "a photo of a {}", probe_images: int = 512):
        if loss not in ("clip", "siglip"):
            from tokzoo.errors import ConfigError

            raise ConfigError(f"recipe 'clip': loss must be 'clip' or 'siglip', not '{loss}'")
        self.steps, self.loss, self.prompt, self.probe_images = steps, loss, prompt, probe_images
        self.bias = nn.Parameter(torch.tensor(-10.0)) if loss == "siglip" else None  # SigLIP's learned bias

    def extra_parameters(self):
        return [self.bias] if self.bias is not None else []

    def stages(self):
        return [Stage("contrastive", self.steps, ["all"])]

    def setup(self, tokenizer, stage, device):
        if self.bias is not None:
            self.bias.data = self.bias.data.to(device)

    def generator_step(self, model, tokenizer, batch, ctx):
        img, txt, scale = model(batch["image"], texts=captions_for(batch, self.prompt))
        if self.loss == "clip":
            loss = L.clip_contrastive_loss(img, txt, scale)
        else:
            loss = L.siglip_loss(img, txt, scale, self.bias)
        return StepResult(loss, {"contrastive": loss})

    @torch.no_grad()
    def evaluate(self, model, train_set, val_set, device) -> dict[str, float]:
        from tokzoo.measures import linear_probe

        def feats(ds, n):
            xs, ys = [], []
            for start in range(0, min(n, len(ds)), 64):
                samples = [ds[i] for i in range(start, min(n, len(ds), start + 64))]
                x = torch.stack([s["image"] for s in samples]).to(device)
                xs.append(model.embed_image(x).cpu())
                ys += [s["label"] for s in samples]
            return torch.cat(xs), torch.tensor(ys)

        was = model.training
        model.eval()
        tx, ty = feats(train_set, self.probe_images)
        vx, vy = feats(val_set, self.probe_images)
        model.train(was)
        return {"eval/probe_top1": linear_probe(tx, ty, vx, vy)}


def captions_for(batch: dict, prompt: str) -> list[str]:
    """The batch's captions; class-labelled images without one get ``prompt`` with the class name.
    Labels are read from the loader's own batch (``batch["host"]``, on the CPU) when the
    trainer gives it: a host read of a device tensor would wait for the GPU."""
    names = batch.get("class_names")
    out = []
    for cap, label in zip(batch["caption"], batch.get("host", batch)["label"].tolist()):
        out.append(cap if cap else prompt.format(names[label] if names else f"class {label}"))
    return out
