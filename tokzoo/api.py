"""The public contract plugins code against.

Conventions, for every class here:

- images are float tensors ``[B, 3, H, W]`` with values in ``[0, 1]``;
- features are float tensors ``[B, C, h, w]`` on the token grid ``(h, w)``;
- codes are integer tensors ``[B, h, w]``, one per *level* of a quantizer
  (one level for plain VQ, one per depth for residual VQ, ``semantic`` and
  ``pixel`` for a hierarchical codebook).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from tokzoo.codes import (CodeLayout, Codes, CodeSpec, QuantizerOutput,  # the data a component passes on
                          TokenizerInfo, TokenizerOutput)
from tokzoo.schema import Spec
from tokzoo.errors import check_returns
from tokzoo.pretrained import (RANDOM, current_spec_path, is_restoring, random_parts, referenced_config,
                               require_pretrained)


# -----------------------------------------------------------------------------
# Components
# -----------------------------------------------------------------------------
class Encoder(nn.Module, abc.ABC):
    """Images ``[B,3,H,W]`` in ``[0,1]`` -> continuous features ``[B,C,h,w]``."""

    out_channels: int
    downsample: int

    @abc.abstractmethod
    def forward(self, images: Tensor) -> Tensor: ...


class Quantizer(nn.Module, abc.ABC):
    """Continuous features ``[B,C,h,w]`` -> :class:`QuantizerOutput`.

    Declares, besides its methods: ``dim``, the channels it quantizes (the
    composed tokenizer projects the encoder's features to it); ``vocab``, level
    name -> number of codes at that level (an attribute or a property: the one
    place the vocabulary is stated; :meth:`codes` builds :class:`Codes` with
    it); ``layout`` (``grid`` unless said)."""

    #: the channels of the features it quantizes
    dim: int
    #: level name -> number of codes at that level
    vocab: Mapping[str, int]
    layout: CodeLayout = "grid"

    def codes(self, levels: dict[str, Tensor]) -> Codes:
        """``levels`` (name -> ``[B, h, w]`` long codes) as :class:`Codes` with this quantizer's vocab and layout."""
        return Codes(levels, dict(self.vocab), self.layout)

    @abc.abstractmethod
    def forward(self, features: Tensor) -> QuantizerOutput: ...

    @abc.abstractmethod
    def lookup(self, codes: Codes) -> Tensor:
        """Codes -> quantized features ``[B,C,h,w]`` (the decode path)."""


class Decoder(nn.Module, abc.ABC):
    """Quantized features ``[B,C,h,w]`` -> images ``[B,3,H,W]``, nominally in ``[0,1]``
    (not clamped: losses see the raw output; :meth:`Tokenizer.decode` clamps).
    Declares ``in_channels``, the channels it decodes from (the composed
    tokenizer projects the quantized features to it)."""

    #: the channels of the features it decodes
    in_channels: int

    @abc.abstractmethod
    def forward(self, quantized: Tensor) -> Tensor: ...

    def last_layer(self) -> Tensor | None:
        """Weight of the last layer (the adaptive GAN weight's reference), or None."""
        return None


class Tokenizer(nn.Module, abc.ABC):
    """A discrete image tokenizer.

    Subclasses implement :attr:`info`, :meth:`encode` and :meth:`decode_codes`;
    :meth:`decode` and :meth:`reconstruct` come with the base class. A
    tokenizer that is trained implements :meth:`forward` (the training pass);
    one that is only benched (released weights, a preset without a recipe)
    need not. Optional, with defaults:
    :meth:`token_features` (with :attr:`token_features_kind`),
    :meth:`encoder_features`, :meth:`trainable_groups`, :meth:`frozen_prefixes`,
    :meth:`last_layer`. Images are ``[B,3,H,W]`` in ``[0,1]``.
    """

    #: how :meth:`token_features` turns codes into features, in a few words
    #: (recorded with every probe result, e.g. "codebook embeddings")
    token_features_kind: str = ""

    #: filled in by the trainer / checkpoint loader: the resolved config
    config: dict | None = None

    @property
    @abc.abstractmethod
    def info(self) -> TokenizerInfo: ...

    def forward(self, images: Tensor) -> TokenizerOutput:
        """Training pass: images in ``[0,1]`` -> reconstruction and quantizer output.
        Only a tokenizer that is trained needs one (see :func:`is_trainable`)."""
        raise NotImplementedError(f"{type(self).__name__} has no training pass (forward): it can be benched, "
                                  "not trained")

    @abc.abstractmethod
    def encode(self, images: Tensor) -> Codes:
        """Images ``[B,3,H,W]`` in ``[0,1]`` -> :class:`Codes`."""

    @abc.abstractmethod
    def decode_codes(self, codes: Codes) -> Tensor:
        """:class:`Codes` -> raw images ``[B,3,H,W]`` (not clamped)."""

    def decode(self, tokens: Codes | Tensor) -> Tensor:
        """Codes, or flat token ids ``[B, L]``, -> images ``[B,3,H,W]`` in ``[0,1]``."""
        if not isinstance(tokens, Codes):
            tokens = Codes.from_token_ids(tokens, self.info.codes)
        return self.decode_codes(tokens).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """Images in ``[0,1]`` -> reconstructions in ``[0,1]`` (eval mode, no grad)."""
        return self.decode(self.encode(images))

    def token_features(self, codes: Codes) -> Tensor | None:
        """Features computed from the discrete codes alone (what a language model
        receives), for the linear probe: ``[B,C]``, ``[B,N,C]`` or ``[B,C,h,w]``
        (mean-pooled by the probe). Each tokenizer decides how its codes become
        features (codebook embeddings, a semantic decoder, a sum of residual
        levels) and names it in :attr:`token_features_kind`. None: no token probe."""
        return None

    def encoder_features(self, images: Tensor) -> Tensor | None:
        """Continuous features before quantization (images in ``[0,1]``), for the
        separate ``probe-encoder`` metric only; never the token probe. None: not offered."""
        return None

    def trainable_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Named parameter groups that recipes can train or freeze."""
        return {"all": list(self.parameters())}

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict key prefixes of frozen pretrained parts (e.g. ``("teacher.",)``).

        Training never changes them; checkpoints store them once per run
        (``frozen/<sha256>.safetensors``) instead of in every checkpoint."""
        return ()

    def last_layer(self) -> Tensor | None:
        """Weight of the decoder's last layer, for the adaptive GAN weight; None: fixed weight."""
        return None


class ComposedTokenizer(Tokenizer):
    """Encoder + quantizer + decoder, each built from the registry.

    ``pre_quant`` / ``post_quant`` are 1x1 convolutions between the encoder's
    channels, the quantizer's ``dim`` and the decoder's input channels.
    """

    def __init__(self, encoder: Encoder, quantizer: Quantizer, decoder: nn.Module,
                 resolution: int, quant_dim: int, decoder_in: int):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.resolution = resolution
        self.pre_quant = nn.Conv2d(encoder.out_channels, quant_dim, 1)
        self.post_quant = nn.Conv2d(quant_dim, decoder_in, 1)
        g = resolution // encoder.downsample
        self._info = TokenizerInfo(resolution, CodeSpec(quantizer.layout, dict(quantizer.vocab), (g, g)))

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    def _quantize(self, images: Tensor) -> QuantizerOutput:
        feats = check_returns(self.encoder, "forward", self.encoder(images), Tensor, "features [B,C,h,w] (a Tensor)")
        q = self.quantizer(self.pre_quant(feats))
        return check_returns(self.quantizer, "forward", q, QuantizerOutput, "tokzoo.api.QuantizerOutput")

    def forward(self, images: Tensor) -> TokenizerOutput:
        q = self._quantize(images)
        return TokenizerOutput(self.decoder(self.post_quant(q.quantized)), q)

    def encode(self, images: Tensor) -> Codes:
        return self._quantize(images).codes

    def decode_codes(self, codes: Codes) -> Tensor:
        return self.decoder(self.post_quant(self.quantizer.lookup(codes)))

    token_features_kind = "codebook embeddings (quantizer.lookup)"

    def token_features(self, codes: Codes) -> Tensor:
        """The quantized features the codes stand for (a residual quantizer's levels summed)."""
        return self.quantizer.lookup(codes)

    def encoder_features(self, images: Tensor) -> Tensor:
        return self.pre_quant(self.encoder(images))

    def last_layer(self) -> Tensor | None:
        """Weight of the decoder's last layer (for the adaptive GAN weight)."""
        fn = getattr(self.decoder, "last_layer", None)
        return fn() if fn is not None else None


# -----------------------------------------------------------------------------
# Benchmark metrics
# -----------------------------------------------------------------------------
@dataclass
class BenchContext:
    """What the bench host gives every metric through :meth:`Metric.setup`
    (never as config parameters: those are the metric's own, e.g. LPIPS's ``net``).

    - ``device``: where the tokenizer runs;
    - ``weights_dir``: the ``--weights-dir`` folder (see :mod:`tokzoo.weights`);
    - ``batch_size``: the bench batch size;
    - ``num_images``: how many images are measured;
    - ``probe_train_images``: how many train-split images a probe may use;
    - :meth:`train_set`: the dataset's ``train`` split (built on first call);
      for data without a held-out split (``same_for_every_split``), the
      images after the ``num_images`` measured ones.
    """

    device: Any = "cpu"
    weights_dir: str | None = None
    batch_size: int = 32
    num_images: int = 0
    probe_train_images: int = 1024
    train_split: Any = None  # a zero-argument callable returning the train split
    _train: Any = field(default=None, repr=False)

    def train_set(self):
        """The dataset's ``train`` split (samples as in ``tokzoo_register_datasets``)."""
        if self._train is None:
            if self.train_split is None:
                raise ValueError("this bench has no train split")
            self._train = self.train_split()
        return self._train


class Metric(abc.ABC):
    """A streaming benchmark metric.

    The host calls :meth:`setup` once (with a :class:`BenchContext`), then per
    tokenizer :meth:`reset`, :meth:`update` for every batch, :meth:`reduce`
    under ``torchrun``, and :meth:`compute`. ``update`` sees each batch once:
    originals and reconstructions as uint8 tensors ``[B,3,H,W]`` (quantized, as
    a saved image would be), the tokenizer's :class:`Codes`, and the batch
    itself (``image`` in ``[0,1]``, ``label``, ``caption``, and the host's
    ``encode_s`` / ``decode_s`` timings and ``warmup`` flag). ``compute``
    returns named float results; ``better`` says, per result, whether
    ``higher`` or ``lower`` is better (results not named there are
    informational). ``weights`` maps each pretrained file the metric used to
    its SHA-256 (recorded in the protocol). A metric that cannot run (a missing
    weights file) raises a :class:`tokzoo.errors.TokzooError` from ``setup``:
    it is reported unavailable, with that message, and the rest runs.
    """

    name: str = "metric"
    #: "lower" or "higher": which direction is better, per result key (read-only
    #: when declared on the class; an instance may set its own in setup/reset)
    better: Mapping[str, str] = MappingProxyType({})
    #: pretrained file -> SHA-256, recorded in the protocol (as ``better``)
    weights: Mapping[str, str] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for attr in ("better", "weights"):  # a class-level dict would be shared, and changed, by every instance
            value = cls.__dict__.get(attr)
            if isinstance(value, dict):
                setattr(cls, attr, MappingProxyType(dict(value)))
    #: state that adds up across batches and processes (reduced by summing)
    state: dict[str, Tensor]

    def setup(self, context: BenchContext) -> None:
        """Once, before the first tokenizer: load networks and weights here."""
        self.context = context

    @abc.abstractmethod
    def reset(self, tokenizer: Tokenizer) -> None:
        """Start measuring ``tokenizer`` (forget the previous one's state)."""

    @abc.abstractmethod
    def update(self, originals: Tensor, reconstructions: Tensor, codes: Codes, batch: dict) -> None:
        """One batch: uint8 ``[B,3,H,W]`` originals and reconstructions, codes, the batch."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """Named results (after :meth:`reduce` when several processes measured)."""

    def flags(self) -> dict[str, str]:
        """After :meth:`compute`: result name -> why that number may mislead
        (e.g. ``{"rfid": "rank-deficient: N = 16 < 2048 ..."}``). Every output
        marks a flagged number with ``†`` and prints the reason. Default: none."""
        return {}

    def per_image_values(self) -> dict[str, Tensor]:
        """After :meth:`compute`: result name -> the per-image values ``[N]`` whose
        mean the result is (all processes' images after :meth:`reduce`). The
        host gives each such result a bootstrap 95 % interval. Default: none."""
        return {}

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        """Combine the processes' states under ``torchrun``. The default sums
        every tensor of ``self.state`` in place with ``all_reduce_sum(tensor)``;
        a metric with other state overrides this (``all_gather_object(list,
        obj)`` gathers any picklable object)."""
        for key in sorted(getattr(self, "state", {}) or {}):
            all_reduce_sum(self.state[key])

    def reference_identity(self) -> str | None:
        """For a metric whose state on the *originals* alone may be cached across
        runs (rFID's reference statistics): a string identifying how it is
        computed (e.g. the extractor's SHA-256). The host adds the dataset
        fingerprint, images, resolution and protocol. None: nothing cached."""
        return None

    def reference_state(self) -> dict[str, Tensor]:
        """The cacheable state computed from the originals (see :meth:`reference_identity`)."""
        return {}

    def load_reference(self, state: dict[str, Tensor]) -> None:
        """Use a cached reference state instead of computing it again."""


def is_trainable(tokenizer: Tokenizer) -> bool:
    """Whether ``tokenizer`` defines a training pass (:meth:`Tokenizer.forward`)."""
    return type(tokenizer).forward is not Tokenizer.forward


# -----------------------------------------------------------------------------
# Pretrained parts and checkpoints a component is built from
# -----------------------------------------------------------------------------
def checkpoint_config(path: str) -> dict:
    """The resolved config of the tokzoo run or checkpoint at ``path`` (a
    component built from another run, e.g. a teacher trained by ``tokzoo train
    clip``). It is recorded with the run being trained, so that run rebuilds
    from its own folder after ``path`` is gone."""
    from tokzoo.ckptio import read_config, resolve_checkpoint
    from tokzoo.pretrained import referenced_config

    return referenced_config(str(path), lambda p: read_config(resolve_checkpoint(p)))


def load_state_strict(module: nn.Module, state: dict[str, Tensor], source: str, hint: str = "") -> None:
    """Load a state dict (e.g. a released checkpoint's, renamed) into ``module``
    strictly: a key of ``source`` left unused, a parameter left unset or a
    shape mismatch is one :class:`~tokzoo.errors.CheckpointError` naming the
    first ones, with ``hint`` (what to check) appended."""
    from tokzoo.ckptio import load_state_strict as load

    load(module, state, source, hint)


def load_checkpoint_weights(module: nn.Module, path: str) -> None:
    """Load the weights of the tokzoo run or checkpoint at ``path`` into
    ``module`` strictly; nothing is read while restoring (the outer
    checkpoint holds every tensor)."""
    if is_restoring():
        return
    from tokzoo.ckptio import load_weights, resolve_checkpoint

    load_weights(module, resolve_checkpoint(path) / "model.safetensors")


__all__ = ["Codes", "CodeSpec", "CodeLayout", "QuantizerOutput", "is_trainable", "Encoder", "Quantizer", "Decoder", "TokenizerOutput",
           "TokenizerInfo", "Tokenizer", "ComposedTokenizer", "Metric", "BenchContext", "Spec", "RANDOM", "require_pretrained",
           "is_restoring", "random_parts", "current_spec_path", "checkpoint_config", "load_checkpoint_weights",
           "referenced_config", "load_state_strict"]
