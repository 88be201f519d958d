"""Rebuilding models: from a run config, and a trained tokenizer from its run
folder or checkpoint alone (the files themselves: :mod:`tokzoo.ckptio`).

Below ``tokzoo.train`` and ``tokzoo.bench``: both load what the other wrote.
"""
from __future__ import annotations

from pathlib import Path

from tokzoo.ckptio import load_weights, read_config, resolve_checkpoint
from tokzoo.errors import CheckpointError
from tokzoo.pretrained import restoring
from tokzoo.registry import build

__all__ = ["build_model_from_config", "load_tokenizer"]


def build_model_from_config(config: dict):
    """The model a run config describes (a tokenizer, or e.g. an encoder for ``clip``)."""
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
