"""Entry point of tokzoo-zoo: the quantizer families of vector-quantize-pytorch,
a VAR-style multi-scale quantizer (``msvq``), and released tokenizers (taming VQGAN, LlamaGen VQ) rebuilt from local files.

Written only against tokzoo's public API, as a stranger's plugin would be.
Each family: (library class, what it forwards ``**kwargs`` to, loss name,
fixed arguments, channel-first input, description).
"""
from __future__ import annotations

from pathlib import Path

import tokzoo


#: family -> (library class, the classes it forwards ``**kwargs`` to, loss name, fixed arguments,
#: channel-first input, description); classes named, imported when a family is first built or shown
FAMILIES = {
    "vector-quantize": ("VectorQuantize", (), "commitment", {}, False,
                        "VQ with its fixes (EMA, cosine codes, k-means init, dead-code expiry, rotation trick)"),
    "residual-vq": ("ResidualVQ", ("VectorQuantize",), "commitment", {}, False,
                    "residual VQ: num_quantizers VQ levels over the residuals"),
    "fsq": ("FSQ", (), None, {}, False, "finite scalar quantization (Mentzer et al. 2023): no codebook"),
    "residual-fsq": ("ResidualFSQ", ("FSQ",), None, {}, False, "residual FSQ: FSQ levels over the residuals"),
    "lfq": ("LFQ", (), "entropy_commitment", {"spherical": False}, False,
            "lookup-free quantization (MAGVIT-v2): sign bits + entropy loss"),
    "bsq": ("LFQ", (), "entropy_commitment", {"spherical": True}, False,
            "binary spherical quantization: LFQ on the unit sphere"),
    "simvq": ("SimVQ", (), "commitment", {}, False, "SimVQ: a learned linear map over a frozen codebook"),
    "latent-quantize": ("LatentQuantize", (), "latent_quantization", {}, True,
                        "latent quantization (Hsu et al. 2023): learnable per-dimension value grids"),
}


#: parameters a family's class sets itself for what it forwards to (never passed twice)
SET_BY_LIBRARY = {"residual-fsq": ("preserve_symmetry",)}


def _classes(family: str) -> tuple[type, tuple[type, ...]]:
    import vector_quantize_pytorch as vqp  # imported when a family is first built or shown, not to list it

    cls, forwards = FAMILIES[family][:2]
    return getattr(vqp, cls), tuple(getattr(vqp, f) for f in forwards)


def _schema(family: str):
    from tokzoo_zoo.quantizers import library_schema

    cls, forwards = _classes(family)
    return library_schema(family, cls, *forwards, drop=tuple(FAMILIES[family][3]) + SET_BY_LIBRARY.get(family, ()))


def _factory(family: str):
    _, _, loss, fixed, channel_first, _ = FAMILIES[family]

    def build(**params):
        from tokzoo_zoo.quantizers import LibraryQuantizer

        cls, _ = _classes(family)
        forwarded = _schema(family).__forwarded__
        params = {k: v for k, v in params.items() if not (k in forwarded and v is None)}  # library defaults
        dim = params.get("dim") or len(params.get("levels") or ())  # FSQ-style: one channel per level
        return LibraryQuantizer(cls(**params, **fixed), family, loss, dim, channel_first)

    build.__name__ = family.replace("-", "_")
    build.__doc__ = f"vector-quantize-pytorch {FAMILIES[family][0]} ({family}); parameters: the library's own"
    return build


@tokzoo.hookimpl
def tokzoo_register_quantizers(register):
    from functools import partial

    for family, (*_, description) in FAMILIES.items():
        register(family, _factory(family), description, config=partial(_schema, family))
    register("msvq", "tokzoo_zoo.multiscale:MultiScaleVQ",
             "VAR-style multi-scale residual VQ: codes per scale, coarse to fine, one shared codebook")


@tokzoo.hookimpl
def tokzoo_register_tokenizers(register):
    ReleasedVQ, DiffusersVQ, DiffusersKL = (f"tokzoo_zoo.released:{c}" for c in ("ReleasedVQ", "DiffusersVQ",
                                                                                 "DiffusersKL"))
    register("released-vq", ReleasedVQ, "a released taming VQGAN / LlamaGen VQ from its local checkpoint file")
    register("diffusers-vq", DiffusersVQ, "a diffusers VQModel from a local folder (save_pretrained layout)")
    register("diffusers-kl", DiffusersKL, "a diffusers AutoencoderKL (SD-VAE) from a local folder: continuous")


@tokzoo.hookimpl
def tokzoo_register_presets(register):
    register("zoo", Path(__file__).parent / "configs")
