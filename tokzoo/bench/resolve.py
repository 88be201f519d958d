"""Which tokenizer a bench name means, and everything a finished result of it
depends on (its identity: a re-bench reuses the result only when all of it matches)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from tokzoo import runfolder
from tokzoo.ckptio import components  # noqa: F401 (importable here)
from tokzoo.bench.options import check_tokenizer_name
from tokzoo.errors import CheckpointError, TokzooError
from tokzoo.models import build_model_from_config, check_tokenizer, first_non_finite, load_tokenizer
from tokzoo.registry import get_registry
from tokzoo.weights import KNOWN_FILES, find_weights, sha256


def resolve_tokenizer(name: str, device: torch.device):
    """A preset name (its run folder's trained weights) or a checkpoint path -> tokenizer."""
    from tokzoo.config import load_run_config

    if check_tokenizer_name(name):
        return load_tokenizer(Path(name).expanduser(), map_location=str(device))
    config = load_run_config(name)
    if not config.get("recipe"):  # a ready-made tokenizer: it loads its own weights (or has none)
        tok = build_model_from_config(config)
        bad = first_non_finite(tok)
        if bad:
            raise CheckpointError(f"'{name}' loaded non-finite weights ({bad}): every number measured from it "
                                  "would be meaningless")
        tok = tok.to(device).eval()
        check_tokenizer(tok)  # its vocabulary and codes, before anything is measured (load_tokenizer does the same)
        return tok
    run_dir = Path(config["run_dir"])
    try:
        tok = load_tokenizer(run_dir, map_location=str(device))
    except CheckpointError as exc:
        raise CheckpointError(f"no trained weights for '{name}' in {run_dir}: train it first with "
                              f"`tokzoo train {name}`, or pass a checkpoint path ({exc})") from None
    used = Path(tok.checkpoint_path).name
    if runfolder.finished_tag(run_dir) != used:
        tok.unfinished = used  # a preset's run that never finished: benched from its last checkpoint, visibly
    return tok


def weight_files(weights_dir) -> dict[str, str | None]:
    """Which known weight files are findable now (path, size, mtime): adding one changes the identity."""
    out = {}
    for key, fname in KNOWN_FILES.items():
        try:
            p = find_weights(fname, key, weights_dir)
            st = p.stat()
            out[key] = f"{p}|{st.st_size}|{int(st.st_mtime)}"
        except TokzooError:
            out[key] = None
    return out


def state_sha256(module) -> str | None:
    """SHA-256 (16 hex) of a module's tensors, names, dtypes and shapes: what it computes with."""
    if not isinstance(module, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}\n".encode())
        if v.numel() and v.device.type != "meta":
            h.update(v.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def identity(tok, opts) -> dict[str, Any]:
    """Everything a finished result of ``tok`` under ``opts`` (:class:`BenchOptions`) depends on."""
    ckpt = getattr(tok, "checkpoint_path", None)
    sha = sha256(Path(ckpt) / "model.safetensors") if ckpt else None
    cfg_hash = hashlib.sha256(json.dumps(tok.config, sort_keys=True).encode()).hexdigest()[:16] if tok.config else None
    return {"checkpoint": ckpt, "checkpoint_sha256": sha, "config_sha256": cfg_hash,
            # a ready-made tokenizer (no checkpoint of ours): the weights it holds, whatever file they came from
            "weights_sha256": None if sha else state_sha256(tok),
            "metrics": sorted(opts.metrics), "metric_params": opts.metric_params,
            "data_params": opts.data_params, "weight_files": weight_files(opts.weights_dir),
            "plugins": get_registry().versions(), "components": components(tok)}
