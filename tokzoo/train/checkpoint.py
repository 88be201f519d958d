"""Checkpoints for training: the files (:mod:`tokzoo.ckptio`) and rebuilding
models from them (:mod:`tokzoo.models`), under the names plugins and scripts use."""
from __future__ import annotations

from tokzoo.ckptio import (FORMAT, alias_map, atomic_write, load_weights, read_config, read_module_state,  # noqa: F401
                           read_state, read_trainer_state, resolve_checkpoint, save_checkpoint, split_frozen)
from tokzoo.models import build_model_from_config, load_tokenizer  # noqa: F401

__all__ = ["FORMAT", "alias_map", "atomic_write", "load_weights", "read_config", "read_module_state", "read_state",
           "read_trainer_state", "resolve_checkpoint", "save_checkpoint", "split_frozen", "build_model_from_config",
           "load_tokenizer"]
