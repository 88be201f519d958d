"""Checkpoint files: safe to kill at any instant, loadable without pickled code.

This module does file I/O only and imports no other tokzoo module but
``tokzoo.errors``; rebuilding a model from a checkpoint is
:mod:`tokzoo.train.checkpoint`.

A run folder holds ``checkpoints/<tag>/`` folders, each with

- ``model.safetensors``: the tokenizer's weights; its metadata carries the
  full resolved config, so :func:`load_tokenizer` needs nothing else;
- ``ema.safetensors``: the EMA weights, when EMA is on;
- ``trainer.pt``: optimisers (the discriminator's too), schedulers, recipe
  state, step counters and RNG states, read with ``weights_only=True``.

A checkpoint is written into a temporary folder and renamed into place, then
``checkpoints/latest`` (a one-line file naming the tag) is replaced
atomically. A kill at any instant leaves the previous checkpoint intact.

Any module graph can be saved: a tensor reachable under several names (a
submodule held twice, tied weights) is stored once and restored under every
name. Frozen pretrained parts that a tokenizer declares
(:meth:`tokzoo.api.Tokenizer.frozen_prefixes`) are stored once per run, in
``frozen/<sha256>.safetensors`` named by the SHA-256 of their contents, and
every checkpoint's metadata refers to that file by a path relative to the run
folder, so the folder stays self-contained and movable.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokzoo import runfolder
from tokzoo.runfolder import (COMPLETE, TAG as _TAG, TEMP_FILE, RunLock, RunLocked, atomic_write,  # noqa: F401
                              repair_latest,  # (importable here)
                              stranded as _stranded)
from tokzoo.errors import CheckpointError, cannot_write, is_full_disk, unreadable

FORMAT = "tokzoo-checkpoint-1"


def write_run_config(run_dir: str | Path, config: dict) -> None:
    """The run's config.json, and beside it the SHA-256 tokzoo wrote it with
    (``.config.json.sha256``): a hand-edited config.json is then noticed."""
    import hashlib
    import json

    text = json.dumps(config, indent=2)
    atomic_write(Path(run_dir) / "config.json", text)
    atomic_write(Path(run_dir) / ".config.json.sha256", hashlib.sha256(text.encode()).hexdigest() + "\n")


def run_config_edited(run_dir: str | Path) -> bool:
    """Whether the run's config.json differs from what tokzoo last wrote there."""
    import hashlib

    cfg, mark = Path(run_dir) / "config.json", Path(run_dir) / ".config.json.sha256"
    if not cfg.is_file() or not mark.is_file():
        return False
    return hashlib.sha256(cfg.read_bytes()).hexdigest() != mark.read_text().strip()


def alias_map(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Key -> the first key naming the very same tensor (same storage, offset,
    shape and strides), for every key that is such a second name."""
    first: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    for k, v in state.items():
        if v.device.type == "meta" or v.numel() == 0:
            continue
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.stride(), v.dtype)
        if ident in first:
            aliases[k] = first[ident]
        else:
            first[ident] = k
    return aliases


def _state_for_save(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors can write: second names of one tensor dropped,
    partial views of a shared storage copied."""
    aliases = alias_map(state)
    out, storages = {}, set()
    for k, v in state.items():
        if k in aliases:
            continue
        t = v.detach().contiguous().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in storages:
            t = t.clone()
        elif ptr is not None:
            storages.add(ptr)
        out[k] = t
    return out


def _content_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of names, dtypes, shapes and bytes (CPU, contiguous tensors; read in place)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(memoryview((t if t.dtype != torch.bool else t.to(torch.uint8)).view(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def split_frozen(state: dict[str, torch.Tensor], prefixes) -> tuple[dict, dict]:
    """(trainable part, frozen part) of a state dict by key prefix."""
    prefixes = tuple(prefixes or ())
    frozen = {k: v for k, v in state.items() if prefixes and k.startswith(prefixes)}
    return {k: v for k, v in state.items() if k not in frozen}, frozen


#: (run folder, identity of the live frozen tensors) -> the file they were stored in: a frozen
#: part is copied to the CPU and hashed at the first checkpoint of a run only, not at every one
_FROZEN_STORED: dict[tuple, str] = {}


def _write_frozen(run_dir: Path, live: dict[str, torch.Tensor]) -> str:
    """Store a frozen part once per run; its path relative to the run folder."""
    ident = (str(run_dir.resolve()), tuple((k, v.data_ptr(), v._version, str(v.device)) for k, v in sorted(live.items())))
    known = _FROZEN_STORED.get(ident)
    if known and (run_dir / known).is_file():
        return known
    frozen = _state_for_save(live)
    digest = _content_sha256(frozen)
    rel = f"{runfolder.FROZEN}/{digest[:32]}.safetensors"
    final = run_dir / rel
    if not final.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{final.name}")
        try:
            save_file(frozen, str(tmp), metadata={"format": FORMAT, "sha256": digest})
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:  # a full disk: no partial file stays (the checkpoint's caller names the space needed)
            tmp.unlink(missing_ok=True)
    _FROZEN_STORED[ident] = rel
    return rel


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _bytes_of(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def save_checkpoint(run_dir: str | Path, tag: str, tokenizer: torch.nn.Module, config: dict,
                    trainer_state: dict[str, Any], ema_state: dict[str, torch.Tensor] | None = None,
                    keep: int = 2, protect_prefix: str = "stage") -> Path:
    """Write checkpoint ``tag`` and publish it: the files go to a temporary
    folder, are synced, marked complete, renamed into place, and only then
    does ``latest`` switch to it. A kill at any point leaves ``latest`` naming
    a complete checkpoint (see :func:`resolve_checkpoint` for the one window
    of a replaced tag). A full disk removes the partial folder and raises a
    :class:`CheckpointError` naming the space needed."""
    ckpt_root = runfolder.checkpoints(run_dir)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".tmp-{tag}-{uuid.uuid4().hex[:8]}"
    prefixes = tokenizer.frozen_prefixes() if hasattr(tokenizer, "frozen_prefixes") else ()
    state, frozen = split_frozen(tokenizer.state_dict(), prefixes)
    try:
        tmp.mkdir()
        meta = {"format": FORMAT, "tokzoo_config": json.dumps(config), "tag": tag,
                "tokzoo_components": json.dumps(components(tokenizer))}  # who built it: named if later missing
        if frozen:
            meta["tokzoo_frozen"] = json.dumps([_write_frozen(Path(run_dir), frozen)])
        save_file(_state_for_save(state), str(tmp / "model.safetensors"), metadata=meta)
        if ema_state is not None:
            ema, _ = split_frozen(ema_state, prefixes)
            save_file(_state_for_save(ema), str(tmp / "ema.safetensors"), metadata=meta)
        torch.save(trainer_state, tmp / "trainer.pt")
        _fsync_tree(tmp)
        (tmp / COMPLETE).write_text(tag + "\n")
    except (OSError, SafetensorError, RuntimeError) as exc:  # the last two: safetensors' / torch.save's I/O
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_full_disk(exc):
            if isinstance(exc, OSError):
                raise cannot_write(tmp.parent / tag, exc, "checkpoint") from None
            raise
        need = _bytes_of(state) * (2 if ema_state is not None else 1) * 3  # weights, EMA, optimiser moments
        free = shutil.disk_usage(ckpt_root).free
        latest = ckpt_root / runfolder.LATEST
        kept = latest.read_text().strip() if latest.is_file() else None
        raise CheckpointError(
            f"no space left on the device of {ckpt_root} while writing checkpoint '{tag}': it needs about "
            f"{need / 2**20:,.0f} MB, {free / 2**20:,.0f} MB are free. The partial checkpoint was removed; "
            + (f"the previous one ('{kept}') is intact. Free space, then continue with --resume."
               if kept else "no earlier checkpoint exists.")) from None
    final = ckpt_root / tag
    if final.exists():  # a re-saved tag: the old one stays complete under .old-* until the new one is in place
        trash = ckpt_root / f".old-{tag}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    atomic_write(ckpt_root / runfolder.LATEST, tag + "\n")
    # prune old step checkpoints (stage finals are kept)
    steps = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in steps[:-keep]:
        if old.name != tag:
            shutil.rmtree(old, ignore_errors=True)
    for junk in [*ckpt_root.glob(".tmp-*"), *ckpt_root.glob(".old-*")]:
        shutil.rmtree(junk, ignore_errors=True)
    _prune_frozen(Path(run_dir))
    return final


def _frozen_refs(file: Path) -> list[str]:
    """The frozen parts a weights file refers to (paths relative to the run folder)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return []
    return json.loads(meta.get("tokzoo_frozen", "[]"))


def _prune_frozen(run_dir: Path) -> None:
    """Remove frozen parts no checkpoint of the run refers to any more."""
    folder = run_dir / runfolder.FROZEN
    if not folder.is_dir():
        return
    used = {ref for ck in runfolder.checkpoints(run_dir).iterdir() if ck.is_dir()
            for name in ("model.safetensors", "ema.safetensors") for ref in _frozen_refs(ck / name)}
    for f in folder.glob("*.safetensors"):
        if f"{runfolder.FROZEN}/{f.name}" not in used:
            f.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, checkpoint folder or ``model.safetensors`` -> the checkpoint folder."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise CheckpointError(f"{p} is not a tokzoo checkpoint (expected a run folder or model.safetensors)")
        return p.parent
    if (p / "model.safetensors").is_file():
        return p
    latest = runfolder.latest_file(p)
    if latest.is_file():
        tag = latest.read_text().strip()
        if not _TAG.fullmatch(tag):  # a checkpoint is a folder inside the run's checkpoints/, nothing else
            raise CheckpointError(f"{latest} names '{tag}', which is not a checkpoint of this run "
                                  "(a tag is a plain folder name inside checkpoints/)")
        ck = runfolder.checkpoint(p, tag)
        if (ck / "model.safetensors").is_file():
            return ck
        stranded = _stranded(runfolder.checkpoints(p), tag)
        if stranded is not None:  # killed while replacing the tag: the complete copy is still here
            return stranded
        raise CheckpointError(f"{latest} names checkpoint '{tag}', which is missing")
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: the path does not exist")
    raise CheckpointError(f"no checkpoint in {p} (no model.safetensors and no checkpoints/latest); "
                          "has this run saved one yet?")


def components(tok) -> dict[str, dict[str, str]]:
    """Module path -> the registered component (kind, name, plugin, distribution, version) built there."""
    out = {}
    for path, module in tok.named_modules():
        info = getattr(module, "tokzoo_component", None)
        if isinstance(info, dict):
            out[path or "(tokenizer)"] = dict(info)
    return out


def read_components(ckpt: Path) -> dict[str, dict[str, str]]:
    """What :func:`components` recorded in a checkpoint ({} for one written before it did)."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(ckpt) / "model.safetensors"), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("tokzoo_components", "{}"))
    except (SafetensorError, OSError, ValueError):
        return {}


def read_config(ckpt: Path) -> dict:
    """The resolved config stored inside ``model.safetensors``."""
    from safetensors import safe_open

    try:
        with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise unreadable(ckpt / "model.safetensors", exc) from None
    if meta.get("format") != FORMAT or "tokzoo_config" not in meta:
        raise CheckpointError(f"{ckpt / 'model.safetensors'} has no tokzoo config in its metadata; "
                              "it was not written by tokzoo")
    try:
        return json.loads(meta["tokzoo_config"])
    except ValueError as exc:
        raise CheckpointError(f"{ckpt / 'model.safetensors'}: its tokzoo config is not readable JSON "
                              f"({str(exc).splitlines()[0]}); the file was damaged or edited") from None


def _load_file(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise unreadable(file, exc) from None


def read_state(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights file with the frozen parts it refers to merged in."""
    file = Path(file)
    state = _load_file(file)
    run_dir = file.parent.parent.parent  # run/checkpoints/<tag>/model.safetensors
    for rel in _frozen_refs(file):
        part = run_dir / rel
        if not part.is_file():
            raise CheckpointError(f"{file} refers to the frozen part {part}, which is missing; a run folder must be "
                                  "copied whole (checkpoints/ and frozen/)")
        state.update(_load_file(part))
    return state


def read_module_state(module: torch.nn.Module, file: Path) -> dict[str, torch.Tensor]:
    """:func:`read_state`, with every second name of a tensor of ``module`` filled in."""
    state = read_state(file)
    for key, first in alias_map(module.state_dict()).items():  # a tensor saved once under its first name
        if key not in state and first in state:
            state[key] = state[first]
    return state


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, hint: str = "") -> None:
    """Load ``state`` into ``module``: every key of the source used, every
    parameter of the module set, shapes equal; else one CheckpointError naming
    the first of each (``hint``: what to check, appended to the message)."""
    own = module.state_dict()
    unused = [k for k in state if k not in own]
    unset = [k for k in own if k not in state]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = []
    if unused:
        parts.append(f"{len(unused)} key(s) of the file unused (e.g. {', '.join(unused[:3])})")
    if unset:
        parts.append(f"{len(unset)} parameter(s) not in the file (e.g. {', '.join(unset[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {shapes[0]})")
    if parts:
        raise CheckpointError(f"{source} does not fit this model: " + "; ".join(parts) + (f". {hint}" if hint else ""))
    module.load_state_dict(state)


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Load a checkpoint's weights into ``module`` strictly, with a clear error on any mismatch."""
    load_state_strict(module, read_module_state(module, file), str(file))


def read_trainer_state(ckpt: Path, mmap: bool = False) -> dict[str, Any]:
    """The trainer's state of checkpoint ``ckpt``; ``mmap`` to read a few entries
    (step, stage) without reading the optimiser moments from disk."""
    try:
        return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no trainer.pt: it can be loaded as a model but not resumed") from None
    except Exception as exc:
        raise unreadable(ckpt / "trainer.pt", exc, "a torch.save file") from None
