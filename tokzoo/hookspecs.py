"""Hook specifications: how a plugin adds components to tokzoo.

Every hook receives a ``register`` callable and returns nothing. A plugin calls
``register(name, factory, description=..., config=...)`` once per component:

- ``name``: the unique name users type (``tokzoo train NAME``, YAML ``name:``);
- ``factory``: a callable building the component from keyword parameters;
- ``description``: one line shown by ``tokzoo list``;
- ``config``: optional dataclass describing the factory's parameters. When
  given, YAML parameters are validated against it before anything is built
  (misspelled keys and wrong types are reported with the closest valid key).

This is the "register callback" pattern of simonw/llm: plugins stay tiny and
the host records which plugin registered what.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("tokzoo")


@hookspec
def tokzoo_register_encoders(register):
    """Register encoders: ``images [B,3,H,W] in [0,1] -> features [B,C,h,w]``."""


@hookspec
def tokzoo_register_quantizers(register):
    """Register quantizers: ``features -> tokzoo.api.QuantizerOutput``."""


@hookspec
def tokzoo_register_decoders(register):
    """Register decoders: ``quantized features -> images [B,3,H,W] in [0,1]``."""


@hookspec
def tokzoo_register_tokenizers(register):
    """Register whole tokenizers (subclasses of ``tokzoo.api.Tokenizer``)."""


@hookspec
def tokzoo_register_recipes(register):
    """Register training recipes: factories returning ``tokzoo.train.Recipe``."""


@hookspec
def tokzoo_register_datasets(register):
    """Register datasets: factories ``(split, resolution, **params) -> torch Dataset``
    of samples ``{"image": [3,H,W] in [0,1], "label": int, "caption": str, "index": int}``
    (optionally ``"attributes": {name: value}``, the answers of the VQA probe's questions).
    The host passes ``split`` and ``resolution``; an optional ``fingerprint()``
    names the images (default: a hash of the parameters and length)."""


@hookspec
def tokzoo_register_metrics(register):
    """Register benchmark metrics: factories (called with the metric's own
    parameters) of ``tokzoo.api.Metric``; the host gives its context through
    ``Metric.setup(tokzoo.api.BenchContext)``."""


@hookspec
def tokzoo_register_presets(register):
    """Register folders of YAML presets: ``register(name, path_to_folder)``.

    Every ``*.yaml`` file in the folder becomes a preset named after the file
    (``vqgan-tiny.yaml`` -> ``tokzoo train vqgan-tiny``)."""


#: hook name -> registry kind, in the order ``tokzoo list`` shows them
HOOK_KINDS = {
    "tokzoo_register_encoders": "encoder",
    "tokzoo_register_quantizers": "quantizer",
    "tokzoo_register_decoders": "decoder",
    "tokzoo_register_tokenizers": "tokenizer",
    "tokzoo_register_recipes": "recipe",
    "tokzoo_register_datasets": "dataset",
    "tokzoo_register_metrics": "metric",
    "tokzoo_register_presets": "preset-dir",
}

#: the component kinds, written once: every hook's kind but the preset folders
KINDS = tuple(kind for kind in HOOK_KINDS.values() if kind != "preset-dir")
