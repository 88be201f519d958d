"""Entry point of tokzoo-baselines: registers its components with tokzoo (by
name, ``"module:attr"``: imported when first built, so listing them is fast)."""
from pathlib import Path

import tokzoo


@tokzoo.hookimpl
def tokzoo_register_quantizers(register):
    register("rvq", "tokzoo_baselines.rvq:ResidualVQ",
             "residual VQ, shared codebook, EMA updates, restarts of unused codes")


@tokzoo.hookimpl
def tokzoo_register_tokenizers(register):
    register("vqgan", "tokzoo_baselines.vqgan:build_vqgan",
             "taming/LlamaGen VQGAN (conv, l2-normalised 8-dim codebook)")
    register("vilau", "tokzoo_baselines.vilau:VilaUTokenizer",
             "VILA-U-style: open_clip tower + residual VQ + conv decoder")


@tokzoo.hookimpl
def tokzoo_register_recipes(register):
    register("vilau", "tokzoo_baselines.vilau:VilaURecipe", "joint contrastive (frozen text tower) + reconstruction")


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("baselines", Path(__file__).parent / "configs")
