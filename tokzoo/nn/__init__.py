"""Reusable network pieces: conv encoder/decoder, vector quantizers."""
from tokzoo.nn.convnets import ConvDecoder, ConvEncoder, ResBlock
from tokzoo.nn.quantizers import VectorQuantizer, batch_perplexity, code_counts, perplexity, perplexity_of

__all__ = ["ConvEncoder", "ConvDecoder", "ResBlock", "VectorQuantizer", "batch_perplexity", "code_counts", "perplexity",
           "perplexity_of"]
