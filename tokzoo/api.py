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
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

import torch
from torch import Tensor, nn

from tokzoo.schema import Spec
from tokzoo.errors import check_returns
from tokzoo.pretrained import (RANDOM, current_spec_path, is_restoring, random_parts, referenced_config,
                               require_pretrained)

CodeLayout = Literal["grid", "residual", "hierarchical"]


# -----------------------------------------------------------------------------
# Codes and token ids
# -----------------------------------------------------------------------------
@dataclass
class Codes:
    """The integer codes a tokenizer produces for a batch of images.

    ``levels`` maps level name -> ``[B, h, w]`` long tensor. ``vocab`` maps the
    same names to the number of possible values at that level. ``layout`` says
    how the levels combine into the token ids a language model would see:

    - ``grid``: one level; ids are the codes, ``h*w`` tokens per image;
    - ``residual``: D levels (depth order); ``h*w*D`` tokens, position-major
      (all depths of position 0, then position 1, ...), ids are the codes;
    - ``hierarchical``: two levels ``(parent, child)`` where the child indexes
      within the parent's sub-codebook of ``vocab[child]`` entries; one token
      per position with id ``parent * m + child`` (``m = vocab[child]``).
    """

    levels: dict[str, Tensor]
    vocab: dict[str, int]
    layout: CodeLayout = "grid"

    def __post_init__(self):
        if set(self.levels) != set(self.vocab):
            raise ValueError("Codes.levels and Codes.vocab must name the same levels")
        if self.layout == "grid" and len(self.levels) != 1:
            raise ValueError("a 'grid' layout has exactly one level")
        if self.layout == "hierarchical" and len(self.levels) != 2:
            raise ValueError("a 'hierarchical' layout has exactly two levels (parent, child)")

    @property
    def grid(self) -> tuple[int, int]:
        first = next(iter(self.levels.values()))
        return int(first.shape[-2]), int(first.shape[-1])

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.levels.values())).shape[0])

    @property
    def token_vocab_size(self) -> int:
        """Vocabulary size of the flat token ids."""
        sizes = list(self.vocab.values())
        if self.layout == "hierarchical":
            return sizes[0] * sizes[1]
        return max(sizes)

    def token_ids(self) -> Tensor:
        """Flatten to the ``[B, L]`` token ids a language model would see."""
        names = list(self.levels)
        B = self.batch_size
        if self.layout == "grid":
            return self.levels[names[0]].reshape(B, -1)
        if self.layout == "residual":
            stacked = torch.stack([self.levels[n] for n in names], dim=-1)  # [B,h,w,D]
            return stacked.reshape(B, -1)
        parent, child = names
        return (self.levels[parent] * self.vocab[child] + self.levels[child]).reshape(B, -1)

    @classmethod
    def from_token_ids(cls, ids: Tensor, like: "CodeSpec") -> "Codes":
        """Inverse of :meth:`token_ids` for codes described by ``like``."""
        h, w = like.grid
        names = list(like.vocab)
        B = ids.shape[0]
        ids = ids.long()
        if like.layout == "grid":
            levels = {names[0]: ids.reshape(B, h, w)}
        elif like.layout == "residual":
            stacked = ids.reshape(B, h, w, len(names))
            levels = {n: stacked[..., d] for d, n in enumerate(names)}
        else:
            parent, child = names
            m = like.vocab[child]
            grid = ids.reshape(B, h, w)
            levels = {parent: torch.div(grid, m, rounding_mode="floor"), child: grid % m}
        return cls(levels=levels, vocab=dict(like.vocab), layout=like.layout)

    def to(self, device) -> "Codes":
        return Codes({k: v.to(device) for k, v in self.levels.items()}, dict(self.vocab), self.layout)


@dataclass(frozen=True)
class CodeSpec:
    """The shape of a tokenizer's codes, without the values."""

    layout: CodeLayout
    vocab: Mapping[str, int]
    grid: tuple[int, int]

    @property
    def tokens_per_image(self) -> int:
        n = self.grid[0] * self.grid[1]
        return n * len(self.vocab) if self.layout == "residual" else n

    @property
    def bits_per_image(self) -> float:
        """Bits to store one image's codes: sum over tokens of log2(vocab)."""
        n = self.grid[0] * self.grid[1]
        return float(n * sum(math.log2(v) for v in self.vocab.values()))


# -----------------------------------------------------------------------------
# Quantizer result
# -----------------------------------------------------------------------------
@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    - ``quantized``: features ``[B, C, h, w]`` to decode (straight-through
      gradients to the encoder when training);
    - ``codes``: the integer codes, see :class:`Codes`;
    - ``losses``: named scalar loss terms the trainer adds (already weighted);
    - ``stats``: named scalar statistics for logging (e.g. batch perplexity).
    """

    quantized: Tensor
    codes: Codes
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def usage_counts(self) -> dict[str, Tensor]:
        """Per level, how often each code value was chosen in this batch."""
        return {
            name: torch.bincount(c.reshape(-1).long(), minlength=self.codes.vocab[name])
            for name, c in self.codes.levels.items()
        }


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
    """Continuous features ``[B,C,h,w]`` -> :class:`QuantizerOutput`."""

    @property
    @abc.abstractmethod
    def vocab(self) -> dict[str, int]:
        """Level name -> number of codes at that level."""

    layout: CodeLayout = "grid"

    @abc.abstractmethod
    def forward(self, features: Tensor) -> QuantizerOutput: ...

    @abc.abstractmethod
    def lookup(self, codes: Codes) -> Tensor:
        """Codes -> quantized features ``[B,C,h,w]`` (the decode path)."""


class Decoder(nn.Module, abc.ABC):
    """Quantized features ``[B,C,h,w]`` -> images ``[B,3,H,W]``, nominally in ``[0,1]``
    (not clamped: losses see the raw output; :meth:`Tokenizer.decode` clamps)."""

    @abc.abstractmethod
    def forward(self, quantized: Tensor) -> Tensor: ...

    def last_layer(self) -> Tensor | None:
        """Weight of the last layer (the adaptive GAN weight's reference), or None."""
        return None


@dataclass
class TokenizerOutput:
    """A training forward pass: reconstruction plus everything losses need."""

    reconstruction: Tensor  # [B,3,H,W], raw decoder output (not clamped)
    quant: QuantizerOutput
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenizerInfo:
    """Metadata that the benchmark reports next to every number."""

    resolution: int
    codes: CodeSpec

    @property
    def token_grid(self) -> tuple[int, int]:
        return self.codes.grid

    @property
    def vocab(self) -> Mapping[str, int]:
        return self.codes.vocab

    @property
    def tokens_per_image(self) -> int:
        return self.codes.tokens_per_image

    @property
    def bits_per_image(self) -> float:
        return self.codes.bits_per_image

    def as_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "layout": self.codes.layout,
            "token_grid": list(self.token_grid),
            "vocab": dict(self.vocab),
            "tokens_per_image": self.tokens_per_image,
            "bits_per_image": self.bits_per_image,
        }


class Tokenizer(nn.Module, abc.ABC):
    """A discrete image tokenizer.

    Subclasses implement :attr:`info`, :meth:`forward` (training pass),
    :meth:`encode` and :meth:`decode_codes`; :meth:`decode` and
    :meth:`reconstruct` come with the base class. Optional, with defaults:
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

    @abc.abstractmethod
    def forward(self, images: Tensor) -> TokenizerOutput:
        """Training pass: images in ``[0,1]`` -> reconstruction and quantizer output."""

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
    #: "lower" or "higher": which direction is better, per result key
    better: dict[str, str] = {}
    #: pretrained file -> SHA-256, recorded in the protocol
    weights: dict[str, str] = {}
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


__all__ = ["Codes", "CodeSpec", "QuantizerOutput", "Encoder", "Quantizer", "Decoder", "TokenizerOutput",
           "TokenizerInfo", "Tokenizer", "ComposedTokenizer", "Metric", "BenchContext", "Spec", "RANDOM", "require_pretrained",
           "is_restoring", "random_parts", "current_spec_path", "checkpoint_config", "load_checkpoint_weights",
           "referenced_config", "load_state_strict"]
