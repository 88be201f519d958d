"""Reusable network pieces: conv encoder/decoder, vector quantizers."""
from tokzoo.nn.convnets import ConvDecoder, ConvEncoder, ResBlock
from tokzoo.nn.quantizers import (SEARCH_CHUNK_BYTES, VectorQuantizer, batch_perplexity, code_counts, nearest_code,
                                  perplexity, perplexity_of)

__all__ = ["ConvEncoder", "ConvDecoder", "ResBlock", "SEARCH_CHUNK_BYTES", "VectorQuantizer", "batch_perplexity",
           "code_counts", "nearest_code", "perplexity", "perplexity_of"]
