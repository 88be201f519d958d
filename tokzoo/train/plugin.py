"""Core's recipes, registered through the same hook as any plugin's."""
from __future__ import annotations

from tokzoo import hookimpl


@hookimpl
def tokzoo_register_recipes(register):
    from tokzoo.train.recipes import ClipRecipe, ReconstructionRecipe

    register("clip", ClipRecipe, "contrastive image-text training of an openclip model (the tiny teacher)")
    register("reconstruction", ReconstructionRecipe,
             "one stage: L1/L2 + LPIPS + PatchGAN (adaptive weight) + quantizer losses")
