"""The public contract plugins code against.

Conventions, for every class here:

- images are float tensors ``[B, 3, H, W]`` with values in ``[0, 1]``;
- features are float tensors ``[B, C, h, w]`` on the token grid ``(h, w)``;
- codes are integer tensors ``[B, h, w]`` (or ``[B, N]``: a 1-D sequence),
  one per *level* of a quantizer (one level for plain VQ, one per depth for
  residual VQ, ``semantic`` and ``pixel`` for a hierarchical codebook);
- a *continuous* tokenizer (an autoencoder without a quantizer, a reference
  row) declares ``TokenizerInfo(resolution, LatentSpec(channels, grid))`` and
  encodes to :class:`Latents` instead of codes.
"""
from __future__ import annotations

import abc
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from tokzoo.codes import (CodeLayout, Codes, CodeSpec, LatentSpec, Latents,  # the data a component passes on
                          QuantizerOutput, TokenizerInfo, TokenizerOutput)
from tokzoo.metric import BenchContext, Metric, MetricResult  # the bench's side of the contract
from tokzoo.sample import ImageDataset, Sample, Word  # the dataset's side
from tokzoo.measures import resample_counts, resample_interval  # a metric's own intervals
from tokzoo.schema import Spec
from tokzoo.errors import ConfigError, check_returns
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
    it); ``layout`` (``grid`` unless said). A quantizer may take a 1-D token
    sequence ``[B, N, C]`` as well as a grid ``[B, C, h, w]`` (core's ``vq``
    does): its codes are then ``[B, N]`` (layout ``sequence`` for one level)
    and :meth:`lookup` gives ``[B, N, C]`` back. A ``multiscale`` quantizer (VAR's
    residual over scales) also declares ``scales``: the side of each level's
    square grid, coarse to fine, the last the encoder's grid."""

    #: the channels of the features it quantizes
    dim: int
    #: level name -> number of codes at that level
    vocab: Mapping[str, int]
    layout: CodeLayout = "grid"
    #: ``multiscale`` only: each level's grid side, coarse to fine (e.g. ``(1, 2, 4, 8)``)
    scales: tuple[int, ...] = ()

    def codes(self, levels: dict[str, Tensor]) -> Codes:
        """``levels`` (name -> ``[B, h, w]`` or ``[B, N]`` long codes) as :class:`Codes` with this
        quantizer's vocab and layout (``grid`` of ``[B, N]`` codes: ``sequence``)."""
        one = next(iter(levels.values()), None)
        sequence = self.layout == "grid" and isinstance(one, Tensor) and one.dim() == 2
        return Codes(levels, dict(self.vocab), "sequence" if sequence else self.layout)

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
    """A discrete image tokenizer (or a continuous one: its ``info`` declares a
    :class:`LatentSpec`, :meth:`encode` gives :class:`Latents` and
    :meth:`decode_codes` takes them).

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
        """Images ``[B,3,H,W]`` in ``[0,1]`` -> :class:`Codes` (:class:`Latents` when continuous)."""

    @abc.abstractmethod
    def decode_codes(self, codes: Codes) -> Tensor:
        """:class:`Codes` (:class:`Latents` when continuous) -> raw images ``[B,3,H,W]`` (not clamped)."""

    def decode(self, tokens: Codes | Latents | Tensor) -> Tensor:
        """Codes, or flat token ids ``[B, L]`` (a continuous tokenizer: its
        :class:`Latents`, or their float values), -> images ``[B,3,H,W]`` in ``[0,1]``."""
        if isinstance(tokens, (Codes, Latents)):
            pass
        elif getattr(self.info, "continuous", False):
            if not (isinstance(tokens, Tensor) and tokens.is_floating_point()):
                raise TypeError(f"{type(self).__name__} is continuous: it has no token ids; decode its Latents "
                                "(or their float values)")
            tokens = Latents(tokens)
        else:
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
        scales = tuple((int(k), int(k)) for k in quantizer.scales) if quantizer.layout == "multiscale" else ()
        if scales and scales[-1] != (g, g):
            raise ConfigError(f"{type(quantizer).__name__}'s finest scale is {scales[-1][0]}x{scales[-1][1]}, but "
                              f"the encoder gives a {g}x{g} grid at resolution {resolution}: set its scales to end "
                              f"with {g}")
        self._info = TokenizerInfo(resolution, CodeSpec(quantizer.layout, dict(quantizer.vocab), (g, g), scales))

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


__all__ = ["Codes", "CodeSpec", "CodeLayout", "Latents", "LatentSpec", "QuantizerOutput", "is_trainable", "Encoder", "Quantizer", "Decoder", "TokenizerOutput",
           "TokenizerInfo", "Tokenizer", "ComposedTokenizer", "Metric", "MetricResult", "BenchContext", "ImageDataset", "Sample", "Word", "Spec", "RANDOM", "require_pretrained",
           "is_restoring", "random_parts", "current_spec_path", "checkpoint_config", "load_checkpoint_weights",
           "referenced_config", "load_state_strict", "resample_counts", "resample_interval"]
