"""Entry point of tokzoo-baselines: registers its components with tokzoo."""
from pathlib import Path

import tokzoo


@tokzoo.hookimpl
def tokzoo_register_quantizers(register):
    from tokzoo_baselines.rvq import ResidualVQ

    register("rvq", ResidualVQ, "residual VQ, shared codebook, EMA updates, restarts of unused codes")


@tokzoo.hookimpl
def tokzoo_register_tokenizers(register):
    from tokzoo_baselines.vilau import VilaUTokenizer
    from tokzoo_baselines.vqgan import build_vqgan

    register("vqgan", build_vqgan, "taming/LlamaGen VQGAN (conv, l2-normalised 8-dim codebook)")
    register("vilau", VilaUTokenizer, "VILA-U-style: open_clip tower + residual VQ + conv decoder")


@tokzoo.hookimpl
def tokzoo_register_recipes(register):
    from tokzoo_baselines.vilau import VilaURecipe

    register("vilau", VilaURecipe, "joint contrastive (frozen text tower) + reconstruction")


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("baselines", Path(__file__).parent / "configs")
