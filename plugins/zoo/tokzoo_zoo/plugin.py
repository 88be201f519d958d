"""Entry point of tokzoo-zoo: the quantizer families of vector-quantize-pytorch,
and released tokenizers (taming VQGAN, LlamaGen VQ) rebuilt from local files.

Written only against tokzoo's public API, as a stranger's plugin would be.
Each family: (library class, what it forwards ``**kwargs`` to, loss name,
fixed arguments, channel-first input, description).
"""
from __future__ import annotations

from pathlib import Path

import tokzoo


def _families():
    import vector_quantize_pytorch as vqp

    return {
        "vector-quantize": (vqp.VectorQuantize, (), "commitment", {}, False,
                            "VQ with its fixes (EMA, cosine codes, k-means init, dead-code expiry, rotation trick)"),
        "residual-vq": (vqp.ResidualVQ, (vqp.VectorQuantize,), "commitment", {}, False,
                        "residual VQ: num_quantizers VQ levels over the residuals"),
        "fsq": (vqp.FSQ, (), None, {}, False, "finite scalar quantization (Mentzer et al. 2023): no codebook"),
        "residual-fsq": (vqp.ResidualFSQ, (vqp.FSQ,), None, {}, False, "residual FSQ: FSQ levels over the residuals"),
        "lfq": (vqp.LFQ, (), "entropy_commitment", {"spherical": False}, False,
                "lookup-free quantization (MAGVIT-v2): sign bits + entropy loss"),
        "bsq": (vqp.LFQ, (), "entropy_commitment", {"spherical": True}, False,
                "binary spherical quantization: LFQ on the unit sphere"),
        "simvq": (vqp.SimVQ, (), "commitment", {}, False, "SimVQ: a learned linear map over a frozen codebook"),
        "latent-quantize": (vqp.LatentQuantize, (), "latent_quantization", {}, True,
                            "latent quantization (Hsu et al. 2023): learnable per-dimension value grids"),
    }


#: parameters a family's class sets itself for what it forwards to (never passed twice)
SET_BY_LIBRARY = {"residual-fsq": ("preserve_symmetry",)}


def _schema(family: str):
    from tokzoo_zoo.quantizers import library_schema

    cls, forwards, _, fixed, _, _ = _families()[family]
    return library_schema(family, cls, *forwards, drop=tuple(fixed) + SET_BY_LIBRARY.get(family, ()))


def _factory(family: str):
    from tokzoo_zoo.quantizers import LibraryQuantizer

    cls, _, loss, fixed, channel_first, _ = _families()[family]
    forwarded = _schema(family).__forwarded__

    def build(**params):
        params = {k: v for k, v in params.items() if not (k in forwarded and v is None)}  # library defaults
        dim = params.get("dim") or len(params.get("levels") or ())  # FSQ-style: one channel per level
        return LibraryQuantizer(cls(**params, **fixed), family, loss, dim, channel_first)

    build.__name__ = family.replace("-", "_")
    build.__doc__ = f"vector-quantize-pytorch {cls.__name__} ({family}); parameters: the library's own"
    return build


@tokzoo.hookimpl
def tokzoo_register_quantizers(register):
    for family, (_, _, _, _, _, description) in _families().items():
        register(family, _factory(family), description, config=_schema(family))


@tokzoo.hookimpl
def tokzoo_register_tokenizers(register):
    from tokzoo_zoo.released import DiffusersKL, DiffusersVQ, ReleasedVQ

    register("released-vq", ReleasedVQ, "a released taming VQGAN / LlamaGen VQ from its local checkpoint file")
    register("diffusers-vq", DiffusersVQ, "a diffusers VQModel from a local folder (save_pretrained layout)")
    register("diffusers-kl", DiffusersKL, "a diffusers AutoencoderKL (SD-VAE) from a local folder: continuous")


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("zoo", Path(__file__).parent / "configs")
