"""tokzoo: train and benchmark discrete image tokenizers under one protocol.

Images cross every public boundary as float tensors ``[B, 3, H, W]`` in ``[0, 1]``.
"""
import pluggy

__version__ = "0.1.0"

#: marker for plugin hook implementations: ``@tokzoo.hookimpl``
hookimpl = pluggy.HookimplMarker("tokzoo")


def load_tokenizer(path, map_location="cpu"):
    """Rebuild a trained tokenizer from a run folder or checkpoint file alone."""
    from tokzoo.models import load_tokenizer as _load

    return _load(path, map_location=map_location)


__all__ = ["hookimpl", "load_tokenizer", "__version__"]
