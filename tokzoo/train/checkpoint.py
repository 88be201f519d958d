"""Checkpoints: safe to kill at any instant, loadable without pickled code.

A run folder holds ``checkpoints/<tag>/`` folders, each with

- ``model.safetensors``: the tokenizer's weights; its metadata carries the
  full resolved config, so :func:`load_tokenizer` needs nothing else;
- ``ema.safetensors``: the EMA weights, when EMA is on;
- ``trainer.pt``: optimisers (the discriminator's too), schedulers, recipe
  state, step counters and RNG states, read with ``weights_only=True``.

A checkpoint is written into a temporary folder and renamed into place, then
``checkpoints/latest`` (a one-line file naming the tag) is replaced
atomically. A kill at any instant leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokzoo.errors import CheckpointError

FORMAT = "tokzoo-checkpoint-1"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _state_for_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: str | Path, tag: str, tokenizer: torch.nn.Module, config: dict,
                    trainer_state: dict[str, Any], ema_state: dict[str, torch.Tensor] | None = None,
                    keep: int = 2, protect_prefix: str = "stage") -> Path:
    """Write checkpoint ``tag`` atomically and point ``latest`` at it."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".tmp-{tag}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    meta = {"format": FORMAT, "tokzoo_config": json.dumps(config), "tag": tag}
    save_file(_state_for_save(tokenizer), str(tmp / "model.safetensors"), metadata=meta)
    if ema_state is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in ema_state.items()}, str(tmp / "ema.safetensors"),
                  metadata=meta)
    torch.save(trainer_state, tmp / "trainer.pt")
    final = ckpt_root / tag
    if final.exists():
        trash = ckpt_root / f".old-{tag}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _atomic_write_text(ckpt_root / "latest", tag + "\n")
    # prune old step checkpoints (stage finals are kept)
    steps = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in steps[:-keep]:
        if old.name != tag:
            shutil.rmtree(old, ignore_errors=True)
    for junk in ckpt_root.glob(".tmp-*"):
        if junk != tmp:
            shutil.rmtree(junk, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, checkpoint folder or ``model.safetensors`` -> the checkpoint folder."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise CheckpointError(f"{p} is not a tokzoo checkpoint (expected a run folder or model.safetensors)")
        return p.parent
    if (p / "model.safetensors").is_file():
        return p
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        tag = latest.read_text().strip()
        ck = p / "checkpoints" / tag
        if (ck / "model.safetensors").is_file():
            return ck
        raise CheckpointError(f"{latest} names checkpoint '{tag}', which is missing")
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: the path does not exist")
    raise CheckpointError(f"no checkpoint in {p} (no model.safetensors and no checkpoints/latest); "
                          "has this run saved one yet?")


def read_config(ckpt: Path) -> dict:
    """The resolved config stored inside ``model.safetensors``."""
    from safetensors import safe_open

    try:
        with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{ckpt / 'model.safetensors'} is corrupt or not a safetensors file "
                              f"({str(exc).splitlines()[0]})") from None
    if meta.get("format") != FORMAT or "tokzoo_config" not in meta:
        raise CheckpointError(f"{ckpt / 'model.safetensors'} has no tokzoo config in its metadata; "
                              "it was not written by tokzoo")
    return json.loads(meta["tokzoo_config"])


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Load a safetensors file into ``module`` strictly, with a clear error on any mismatch."""
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is corrupt or not a safetensors file ({str(exc).splitlines()[0]})") from None
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[0]})")
        raise CheckpointError(f"{file} does not fit this model: " + "; ".join(parts))
    module.load_state_dict(state)


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    try:
        return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no trainer.pt: it can be loaded as a model but not resumed") from None
    except Exception as exc:
        raise CheckpointError(f"{ckpt / 'trainer.pt'} is corrupt ({str(exc).splitlines()[0]})") from None


def build_model_from_config(config: dict):
    """The model a run config describes (a tokenizer, or e.g. an encoder for ``clip``)."""
    from tokzoo.registry import build

    model = build(config.get("model_kind", "tokenizer"), config["model"])
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
    tok = build_model_from_config(config)
    weights = ckpt / "ema.safetensors" if ema and (ckpt / "ema.safetensors").is_file() else ckpt / "model.safetensors"
    load_weights(tok, weights)
    tok.checkpoint_path = str(ckpt)
    return tok.to(map_location).eval()
