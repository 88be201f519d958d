"""Rebuilding models: from a run config, and a trained tokenizer from its run
folder or checkpoint alone (the files themselves: :mod:`tokzoo.ckptio`).

Below ``tokzoo.train`` and ``tokzoo.bench``: both load what the other wrote.
"""
from __future__ import annotations

from pathlib import Path

from tokzoo.ckptio import load_weights, read_components, read_config, resolve_checkpoint
from tokzoo.errors import CheckpointError, UnknownNameError
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
    try:
        with restoring(config.get("references")):  # every tensor comes from the checkpoint
            tok = build_model_from_config(config)
    except UnknownNameError as exc:  # a component whose plugin is not installed here: name the distribution
        raise missing_plugin(ckpt, exc) from None
    weights = ckpt / "ema.safetensors" if ema and (ckpt / "ema.safetensors").is_file() else ckpt / "model.safetensors"
    load_weights(tok, weights)
    bad = first_non_finite(tok)
    if bad:
        raise CheckpointError(f"{weights} holds non-finite weights ({bad}): a tokenizer trained to NaN or a damaged "
                              "file; every number measured from it would be meaningless")
    tok.checkpoint_path = str(ckpt)
    tok = tok.to(map_location).eval()
    check_tokenizer(tok)
    return tok


def check_tokenizer(tok) -> None:
    """Its vocabulary, and the codes of one image, as the contract says (a
    ContractError naming it, exit 3, before anything is measured with it)."""
    import torch

    from tokzoo.codes import check_declared, check_encoded

    info = getattr(tok, "info", None)
    check_declared(info, tok)
    res = getattr(info, "resolution", None)
    if isinstance(res, int) and 0 < res <= 1024:
        device = next((p.device for p in tok.parameters()), torch.device("cpu"))
        image = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            check_encoded(tok.encode(image), tok, info)


def missing_plugin(ckpt: Path, exc: UnknownNameError) -> Exception:
    """The error for a checkpoint naming a component nobody registers: the distribution
    that built it (recorded in the checkpoint) when it is not installed, else ``exc``."""
    from importlib import metadata

    for info in read_components(ckpt).values():
        if info.get("kind") == exc.kind and info.get("name") == exc.name and info.get("distribution"):
            dist = info["distribution"]
            try:
                metadata.distribution(dist)
            except metadata.PackageNotFoundError:
                return CheckpointError(f"{ckpt}: its {exc.kind} '{exc.name}' was built by distribution '{dist} "
                                       f"{info.get('version', '?')}', which is not installed here: pip install {dist}")
            return CheckpointError(f"{ckpt}: its {exc.kind} '{exc.name}' was built by distribution '{dist}', which "
                                   f"is installed but registers no {exc.kind} '{exc.name}' now (see tokzoo plugins)"
                                   f"\n{exc}")
    return exc


def first_non_finite(module) -> str | None:
    """``'name: k of n values are NaN/Inf'`` for the first parameter that is not
    finite (or floating buffer holding NaN: an EMA codebook), else None."""
    import torch

    for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, t in named:
            if not t.is_floating_point():
                continue
            bad = ~torch.isfinite(t) if kind == "parameter" else torch.isnan(t)
            if bool(bad.any()):
                return f"{kind} {name}: {int(bad.sum())} of {t.numel()} values are NaN or Inf"
    return None
