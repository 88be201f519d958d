"""Locally made stand-ins for pretrained weight files and tokenizers (tests and benchmarks).

They have the exact layout of the real files, so tokzoo's real loading code
runs on them; their values are random (seeded), so numbers measured with them
are only comparable with numbers measured with the same file.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from tokzoo.metric import merge_shards  # noqa: F401 (a metric's reduction tested without processes)
from tokzoo.weights import KNOWN_FILES


def make_alexnet_weights(folder: str | Path, seed: int = 0) -> Path:
    import torchvision

    torch.manual_seed(seed)
    path = Path(folder) / KNOWN_FILES["alexnet"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def make_inception_weights(folder: str | Path, seed: int = 0) -> Path:
    """A random-initialised state dict of torch-fidelity's FID InceptionV3."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as fe

    class _Unloaded(fe.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialisation
            return None

    torch.manual_seed(seed)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}):
        model = _Unloaded("inception-v3-compat", ["2048"])
    # calibrate BatchNorm statistics on random images (one pass in train mode with
    # momentum 1), so activations keep a healthy scale through the 94 layers
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model((torch.rand(16, 3, 64, 64, generator=g) * 255).to(torch.uint8))
    state = model.state_dict()
    path = Path(folder) / KNOWN_FILES["inception"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def make_openclip_weights(arch: str, folder: str | Path, seed: int = 0) -> Path:
    """A random-initialised open_clip checkpoint of ``arch`` (e.g.
    ``ViT-L-16-SigLIP-256``), saved the way open_clip's released
    ``open_clip_pytorch_model.bin`` files are: a plain state dict."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    path = Path(folder) / f"{arch}-standin.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def make_hf_text_tokenizer(folder: str | Path, vocab_size: int = 1000) -> Path:
    """A small Hugging Face fast tokenizer folder (``tokenizer.json`` +
    ``tokenizer_config.json``) standing in for a Hub tokenizer such as SigLIP's:
    a word-level vocabulary, with pad and end-of-sequence tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(vocab_size - 3)]
    common = ["a", "an", "the", "photo", "of", "on", "small", "large", "red", "green", "blue", "yellow", "black",
              "white", "purple", "orange", "circle", "square", "triangle", "diamond", "arrow", "bar", "star", "cross",
              "ring", "crescent", "background", "texture"]
    words[3:3 + len(common)] = common
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words[:vocab_size])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    import json

    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 64}))
    return out


# -- testing a plugin -----------------------------------------------------------------
@contextlib.contextmanager
def registered_plugin(plugin, name: str | None = None, distribution: str = "(test)", version: str = "dev"):
    """Register ``plugin`` (a module or object with ``@tokzoo.hookimpl`` hooks)
    for the duration of a ``with`` block, on top of a freshly loaded registry,
    and restore the previous registry afterwards.

    Works whether or not the plugin is also installed: an installed entry point
    that loads this very object is left out, so nothing is registered twice.
    Yields the registry; a plugin that fails to register raises its error."""
    from tokzoo import registry as R

    name = name or getattr(plugin, "__name__", type(plugin).__name__)
    with R._lock:
        previous = R._registry
    reg = R.load_registry(exclude=plugin)
    reg.remove_plugin(name)
    reg.add_plugin(plugin, name, distribution, version)
    info = reg.plugins[name]
    if info.error:
        from tokzoo.errors import PluginError

        raise PluginError(f"plugin '{name}' did not register: {info.error}")
    with R._lock:
        R._registry = reg
    try:
        yield reg
    finally:
        with R._lock:
            R._registry = previous


try:
    import pytest as _pytest
except ImportError:  # pragma: no cover - pytest is optional at run time
    _pytest = None

if _pytest is not None:
    @_pytest.fixture
    def tokzoo_plugin():
        """Pytest fixture: ``tokzoo_plugin(my_plugin)`` registers a plugin for one
        test (see :func:`registered_plugin`); import it into your conftest.py."""
        with contextlib.ExitStack() as stack:
            yield lambda plugin, **kw: stack.enter_context(registered_plugin(plugin, **kw))
