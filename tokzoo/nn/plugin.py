"""Core's networks - the conv encoder/decoder, the openclip encoder, VQ and the
composed tokenizer - registered through the same hooks as any plugin."""
from __future__ import annotations

from collections.abc import Mapping

from tokzoo import hookimpl
from tokzoo.api import ComposedTokenizer
from tokzoo.schema import Spec, schema_of
from tokzoo.nn import ConvDecoder, ConvEncoder, VectorQuantizer


def build_composed(resolution: int = 32, encoder: Spec.encoder = "conv", quantizer: Spec.quantizer = "vq",
                   decoder: Spec.decoder = "conv") -> ComposedTokenizer:
    """Encoder + quantizer + decoder from the registry, joined by 1x1 projections."""
    from tokzoo.registry import build

    enc = build("encoder", encoder)
    quant = build("quantizer", quantizer)
    dec = build("decoder", decoder)
    from tokzoo.errors import ConfigError

    for part, kind, attr, what in ((enc, "encoder", "out_channels", "int"), (enc, "encoder", "downsample", "int"),
                                   (quant, "quantizer", "dim", "int"), (quant, "quantizer", "vocab", "mapping"),
                                   (dec, "decoder", "in_channels", "int")):  # what tokzoo.api declares on each
        value = getattr(part, attr, None)
        ok = isinstance(value, Mapping) and value if what == "mapping" else isinstance(value, int) and value > 0
        if not ok:
            raise ConfigError(f"the {kind} {type(part).__name__} declares no {attr} (tokzoo.api.{kind.capitalize()}."
                              f"{attr}: {'level name -> codes' if what == 'mapping' else 'a positive integer'}); "
                              f"the composed tokenizer needs it to join the parts (got {value!r})")
    if resolution % enc.downsample:
        raise ConfigError(f"resolution {resolution} is not divisible by the encoder's downsampling {enc.downsample}")
    return ComposedTokenizer(enc, quant, dec, resolution, quant_dim=quant.dim, decoder_in=dec.in_channels)


@hookimpl
def tokzoo_register_encoders(register):
    from tokzoo.nn.clip import OpenClipEncoder, build_openclip

    register("conv", ConvEncoder, "taming/LlamaGen-style ResNet conv encoder")
    register("openclip", build_openclip, "open_clip image-text model (tiny custom, or a named arch from a local file)",
             config=schema_of(OpenClipEncoder, "openclip"))  # the encoder's own signature


@hookimpl
def tokzoo_register_quantizers(register):
    register("vq", VectorQuantizer, "nearest-neighbour VQ, l2-normalised low-dim lookup, straight-through")


@hookimpl
def tokzoo_register_decoders(register):
    register("conv", ConvDecoder, "taming/LlamaGen-style ResNet conv decoder")


@hookimpl
def tokzoo_register_tokenizers(register):
    register("composed", build_composed, "generic encoder + quantizer + decoder from the registry")
