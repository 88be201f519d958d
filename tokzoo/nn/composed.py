"""The composed tokenizer's factory: encoder + quantizer + decoder from the
registry, joined by 1x1 projections (registered as ``composed``)."""
from __future__ import annotations

from collections.abc import Mapping

from tokzoo.api import ComposedTokenizer
from tokzoo.schema import Spec


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
