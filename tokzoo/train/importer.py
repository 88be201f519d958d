"""``tokzoo import``: a released tokenizer -> a normal run folder.

The preset must be a ready-made tokenizer (no recipe) whose model loads a
released file or folder through a ``checkpoint`` (or ``path``) parameter. It is built once from the
file, and written as a checkpoint (``model.safetensors`` + the full config,
with the source file's name and SHA-256), so that ``load_tokenizer`` and
``tokzoo bench`` read it from any directory without the original file, and a
training preset can start from it with ``init_from``.
"""
from __future__ import annotations

from pathlib import Path

from tokzoo import runfolder
from tokzoo.ckptio import save_checkpoint, write_run_config
from tokzoo.config import load_run_config
from tokzoo.errors import CheckpointError, ConfigError
from tokzoo.pretrained import recording_references
from tokzoo.weights import find_weights, sha256, using_weights_dir


def _source_param(config: dict, preset: str) -> str:
    """The model parameter that names the released file: ``checkpoint`` or ``path``."""
    import dataclasses

    from tokzoo.registry import get_registry

    comp = get_registry().get("tokenizer", config["model"]["name"])
    names = {f.name for f in dataclasses.fields(comp.config)} if comp.config else set()
    for param in ("checkpoint", "path"):
        if param in names:
            return param
    raise ConfigError(f"'{preset}' ({config['model']['name']}) takes no checkpoint or path parameter: "
                      "nothing to import")


def import_release(preset: str, source: str, out: str | Path, overrides: list[str] | None = None,
                   weights_dir: str | None = None) -> Path:
    out = Path(out)
    runfolder.check_output_folder(out, "--out")
    if runfolder.looks_like_run(out):
        raise ConfigError(f"{out} already holds a run; choose another --out (nothing was changed)")
    src = Path(source).expanduser()
    with using_weights_dir(weights_dir):
        if not src.exists():
            src = find_weights(source, f"tokzoo import {preset}", weights_dir)
        config = load_run_config(preset, [*(overrides or []), f"run_dir={out}"])
        config["model"][_source_param(config, preset)] = str(src.resolve())
        if config.get("recipe"):
            raise ConfigError(f"'{preset}' is a training preset; import takes a ready-made tokenizer preset "
                              "(no recipe), e.g. llamagen-vq16 or taming-f16-16384")
        from tokzoo.models import build_model_from_config

        with recording_references() as refs:
            tok = build_model_from_config(config)
    config["references"] = refs
    from tokzoo.models import first_non_finite

    bad = first_non_finite(tok)
    if bad:
        raise CheckpointError(f"{src} holds non-finite weights ({bad}); nothing was imported")
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    digest = sha256(src) if src.is_file() else {str(p.relative_to(src)): sha256(p) for p in files}
    config["imported_from"] = {"file": src.name, "sha256": digest}
    tok.config = config
    out.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(out, "imported", tok, config, {"imported": True})
    write_run_config(out, config)
    return ckpt
