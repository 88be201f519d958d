"""Rebuilding models from checkpoints (the files themselves: :mod:`tokzoo.ckptio`)."""
from __future__ import annotations

from pathlib import Path

from tokzoo.ckptio import (FORMAT, alias_map, atomic_write, load_weights, read_config, read_module_state,  # noqa: F401
                           read_state, read_trainer_state, resolve_checkpoint, save_checkpoint, split_frozen)
from tokzoo.errors import CheckpointError
from tokzoo.pretrained import restoring

__all__ = ["FORMAT", "alias_map", "atomic_write", "load_weights", "read_config", "read_module_state", "read_state",
           "read_trainer_state", "resolve_checkpoint", "save_checkpoint", "split_frozen", "build_model_from_config",
           "load_tokenizer"]

def build_model_from_config(config: dict):
    """The model a run config describes (a tokenizer, or e.g. an encoder for ``clip``)."""
    from tokzoo.registry import build

    model = build(config.get("model_kind", "tokenizer"), config["model"], where="model")
    model.config = config
    return model


def load_tokenizer(path: str | Path, map_location: str = "cpu", ema: bool = True):
    """Rebuild a trained tokenizer from a run folder or checkpoint alone, in eval mode.

    Uses the EMA weights when the checkpoint has them and ``ema`` is True.
    """
    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    if config.get("model_kind", "tokenizer") != "tokenizer":
        raise CheckpointError(f"{ckpt} holds a trained {config.get('model_kind')} "
                              f"('{config['model'].get('name')}'), not a tokenizer")
    with restoring(config.get("references")):  # every tensor comes from the checkpoint
        tok = build_model_from_config(config)
    weights = ckpt / "ema.safetensors" if ema and (ckpt / "ema.safetensors").is_file() else ckpt / "model.safetensors"
    load_weights(tok, weights)
    tok.checkpoint_path = str(ckpt)
    return tok.to(map_location).eval()
