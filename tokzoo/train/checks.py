"""Checks the trainer runs before anything is written: that a resume continues
the run its checkpoints record, and that a batch can fit."""
from __future__ import annotations

from pathlib import Path

import torch

from tokzoo.ckptio import read_config, run_config_edited
from tokzoo.errors import CheckpointError, ConfigError

#: trainer settings a resume may change: how the run proceeds, not what it computes
RESUME_MAY_CHANGE = ("max_steps", "log_every", "ckpt_every", "eval_images", "num_workers", "device", "compile")


def check_resume(run_dir: Path, cfg: dict, ckpt: Path) -> None:
    """A resume continues the run as recorded: what defines it may not change (what only says how
    it runs may: RESUME_MAY_CHANGE), and a config.json edited by hand is not silently overwritten."""
    if run_config_edited(run_dir):
        raise CheckpointError(f"cannot resume {run_dir}: its config.json was edited since tokzoo wrote it "
                              "(a resume continues the run its checkpoints record; put config.json back, or "
                              "start a new run_dir with the edited values)")
    saved = read_config(ckpt)
    changed = [key for key in ("model", "recipe", "data", "seed") if saved.get(key) != cfg.get(key)]
    old_t, new_t = saved.get("trainer") or {}, cfg.get("trainer") or {}
    changed += [f"trainer.{k}" for k in sorted(set(old_t) | set(new_t))
                if k not in RESUME_MAY_CHANGE and k in old_t and old_t.get(k) != new_t.get(k)]
    if changed:
        raise CheckpointError(f"cannot resume {run_dir}: {', '.join(changed)} differ(s) from the run's "
                              "recorded config (a resumed run would misstate what it is); start a new run_dir, "
                              f"or resume without them (may change: {', '.join(RESUME_MAY_CHANGE)})")


def check_batch_fits(tokenizer, train_set, batch_size: int, device: torch.device) -> None:
    """Refuse a batch whose activations cannot fit, before the first step: what one
    training pass saves for its backward is measured on 2 images and scaled to
    ``trainer.batch_size`` (activations grow with the batch), against the memory free now."""
    from tokzoo.device import free_memory

    bs, free = batch_size, free_memory(device)
    if free is None or len(train_set) < 2:
        return
    samples = [s for s in (train_set[i] for i in range(min(8, len(train_set)))) if "skipped" not in s][:2]
    if len(samples) < 2:
        return
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    import copy

    images = torch.stack([s["image"] for s in samples]).to(device)
    rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if device.type == "cuda" else None)
    try:
        probe = copy.deepcopy(tokenizer)  # a training pass may update EMA codebooks: never the real model
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            probe(images)
        del probe
    except Exception:  # a tokenizer that cannot be copied, or whose pass needs the recipe's arguments
        return
    finally:  # the run starts exactly as it would have: same weights, same random stream
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state_all(rng[1])
    need = saved[0] / len(samples) * bs  # one micro-batch of batch_size (grad_accum adds steps, not memory)
    if need > free:
        raise ConfigError(f"trainer.batch_size={bs} needs about {need / 2**30:.1f} GiB for its activations "
                          f"(measured on 2 images, scaled), and {free / 2**30:.1f} GiB are free on "
                          f"{device}: choose a smaller batch (trainer.grad_accum keeps the effective one)")
