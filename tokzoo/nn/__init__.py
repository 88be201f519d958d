"""Reusable network pieces: conv encoder/decoder, vector quantizers."""
from tokzoo.nn.convnets import ConvDecoder, ConvEncoder
from tokzoo.nn.quantizers import VectorQuantizer, batch_perplexity

__all__ = ["ConvEncoder", "ConvDecoder", "VectorQuantizer", "batch_perplexity"]
