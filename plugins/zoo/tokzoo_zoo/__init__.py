"""tokzoo-zoo: vector-quantize-pytorch's quantizer families as tokzoo quantizers."""
