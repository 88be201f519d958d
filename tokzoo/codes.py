"""The data that crosses the contract between components: a batch's integer
codes (:class:`Codes`), their shape without values (:class:`CodeSpec`), a
continuous tokenizer's latents instead (:class:`Latents`, :class:`LatentSpec`), what
a quantizer returns (:class:`QuantizerOutput`), a tokenizer's training pass
(:class:`TokenizerOutput`) and metadata (:class:`TokenizerInfo`). Importable
from :mod:`tokzoo.api`, where the components that pass them are declared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from tokzoo.errors import CodesError, ContractError, who
from tokzoo.latents import LatentSpec, Latents  # a continuous tokenizer's, instead of codes

__all__ = ["CodeLayout", "CodeSpec", "Codes", "LatentSpec", "Latents", "QuantizerOutput", "TokenizerInfo",
           "TokenizerOutput", "check_vocab", "check_codes", "check_encoded", "check_declared"]

CodeLayout = Literal["grid", "sequence", "residual", "hierarchical", "multiscale"]


# -----------------------------------------------------------------------------
# Codes and token ids
# -----------------------------------------------------------------------------
@dataclass
class Codes:
    """The integer codes a tokenizer produces for a batch of images.

    ``levels`` maps level name -> a long tensor ``[B, h, w]`` (a 2-D grid of
    tokens) or ``[B, N]`` (a 1-D sequence: TiTok, FlexTok, SEED); every level
    has the same shape, except in the ``multiscale`` layout. ``vocab`` maps the same names to the number of possible
    values at that level. ``layout`` says how the levels combine into the
    token ids a language model would see:

    - ``grid``: one level ``[B, h, w]``; ids are the codes, ``h*w`` tokens per image;
    - ``sequence``: one level ``[B, N]``; ids are the codes, ``N`` tokens in order;
    - ``residual``: D levels (depth order); ``positions*D`` tokens, position-major
      (all depths of position 0, then position 1, ...), ids are the codes;
    - ``hierarchical``: two levels ``(parent, child)`` where the child indexes
      within the parent's sub-codebook of ``vocab[child]`` entries; one token
      per position with id ``parent * m + child`` (``m = vocab[child]``);
    - ``multiscale``: one level per scale, coarse to fine (VAR's order), each a
      grid ``[B, h_k, w_k]`` of its own size (the last is the finest);
      ``sum h_k * w_k`` tokens, scale after scale, each scale row-major; ids
      are the codes (scales sharing one codebook share its ids; a language
      model tells the scales apart by their positions).

    ``residual`` and ``hierarchical`` levels may be grids or sequences.
    """

    levels: dict[str, Tensor]
    vocab: dict[str, int]
    layout: CodeLayout = "grid"

    def __post_init__(self):
        if set(self.levels) != set(self.vocab):
            raise CodesError("Codes.levels and Codes.vocab must name the same levels")
        if self.layout in ("grid", "sequence") and len(self.levels) != 1:
            raise CodesError(f"a '{self.layout}' layout has exactly one level")
        if not all(isinstance(v, Tensor) for v in self.levels.values()):
            return  # said by the contract's checks where the codes enter (check_codes)
        if self.layout == "multiscale":
            if any(v.dim() != 3 for v in self.levels.values()):
                raise CodesError("a 'multiscale' layout's levels are grids [B, h, w], one per scale")
            if len({int(v.shape[0]) for v in self.levels.values()}) > 1:
                raise CodesError("every level of multiscale Codes holds the same images (one batch size)")
            return
        shapes = {tuple(v.shape) for v in self.levels.values()}
        if len(shapes) > 1:
            raise CodesError(f"every level of Codes has the same shape, not {sorted(shapes)}")
        dims = len(next(iter(shapes))) if shapes else 0
        if self.layout == "sequence" and dims != 2:
            raise CodesError(f"a 'sequence' layout's level is [B, N], not of {dims} dimensions")
        if self.layout == "grid" and dims != 3:
            raise CodesError(f"a 'grid' layout's level is [B, h, w], not of {dims} dimensions (a 1-D token "
                             "sequence [B, N] is the 'sequence' layout)")
        if self.layout == "hierarchical" and len(self.levels) != 2:
            raise CodesError("a 'hierarchical' layout has exactly two levels (parent, child)")

    @property
    def grid(self) -> tuple[int, ...]:
        """The token positions' shape: ``(h, w)`` for a grid, ``(N,)`` for a
        sequence; for ``multiscale``, the finest (last) scale's."""
        last = list(self.levels.values())[-1]
        return tuple(int(d) for d in last.shape[1:])

    @property
    def scales(self) -> tuple[tuple[int, int], ...]:
        """``multiscale``: each level's ``(h, w)``, coarse to fine; otherwise ``()``."""
        if self.layout != "multiscale":
            return ()
        return tuple((int(v.shape[1]), int(v.shape[2])) for v in self.levels.values())

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
        if self.layout in ("grid", "sequence"):
            return self.levels[names[0]].reshape(B, -1)
        if self.layout == "multiscale":
            return torch.cat([self.levels[n].reshape(B, -1) for n in names], dim=1)
        if self.layout == "residual":
            stacked = torch.stack([self.levels[n] for n in names], dim=-1)  # [B,h,w,D] or [B,N,D]
            return stacked.reshape(B, -1)
        parent, child = names
        return (self.levels[parent] * self.vocab[child] + self.levels[child]).reshape(B, -1)

    @classmethod
    def from_token_ids(cls, ids: Tensor, like: "CodeSpec") -> "Codes":
        """Inverse of :meth:`token_ids` for codes described by ``like``."""
        shape = tuple(like.grid)
        names = list(like.vocab)
        B = ids.shape[0]
        ids = ids.long()
        if like.layout in ("grid", "sequence"):
            levels = {names[0]: ids.reshape(B, *shape)}
        elif like.layout == "multiscale":
            sizes = [h * w for h, w in like.scales]
            levels = {n: part.reshape(B, *hw) for n, part, hw in zip(names, ids.split(sizes, dim=1), like.scales)}
        elif like.layout == "residual":
            stacked = ids.reshape(B, *shape, len(names))
            levels = {n: stacked[..., d] for d, n in enumerate(names)}
        else:
            parent, child = names
            m = like.vocab[child]
            grid = ids.reshape(B, *shape)
            levels = {parent: torch.div(grid, m, rounding_mode="floor"), child: grid % m}
        return cls(levels=levels, vocab=dict(like.vocab), layout=like.layout)

    def to(self, device) -> "Codes":
        return Codes({k: v.to(device) for k, v in self.levels.items()}, dict(self.vocab), self.layout)

    def head(self, k: int) -> "Codes":
        """The first ``k`` images' codes (as :meth:`Latents.head`)."""
        return Codes({name: v[:k] for name, v in self.levels.items()}, dict(self.vocab), self.layout)


@dataclass(frozen=True)
class CodeSpec:
    """The shape of a tokenizer's codes, without the values."""

    layout: CodeLayout
    vocab: Mapping[str, int]
    grid: tuple[int, ...]  # the token positions: (h, w) for a grid, (N,) for a sequence; multiscale: the finest
    #: ``multiscale`` only: each level's ``(h, w)``, coarse to fine, in ``vocab``'s order (the last = ``grid``)
    scales: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if not isinstance(self.grid, (tuple, list)) or len(self.grid) not in (1, 2) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.grid):
            raise CodesError(f"CodeSpec.grid is (h, w) or (N,) of positive whole numbers, not {self.grid!r}")
        if self.layout == "sequence" and len(self.grid) != 1:
            raise CodesError(f"a 'sequence' layout's grid is (N,), not {tuple(self.grid)}")
        if self.layout == "grid" and len(self.grid) != 2:
            raise CodesError(f"a 'grid' layout's grid is (h, w), not {tuple(self.grid)} (a 1-D token sequence is "
                             "the 'sequence' layout)")
        object.__setattr__(self, "grid", tuple(self.grid))
        if self.layout == "multiscale":
            scales = tuple(tuple(s) for s in (self.scales or ()))
            if len(scales) != len(self.vocab) or not all(
                    len(s) == 2 and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
                    for s in scales):
                raise CodesError(f"a 'multiscale' CodeSpec gives scales: one (h, w) per level ({len(self.vocab)}), "
                                 f"coarse to fine, not {self.scales!r}")
            if scales[-1] != self.grid:
                raise CodesError(f"a 'multiscale' CodeSpec's grid is its finest scale {scales[-1]}, not {self.grid}")
            object.__setattr__(self, "scales", scales)
        elif self.scales:
            raise CodesError(f"scales belong to the 'multiscale' layout, not to '{self.layout}'")

    def level_positions(self, level: str) -> int:
        """Token positions of one level: its scale's ``h*w`` (multiscale), else :attr:`positions`."""
        if self.layout == "multiscale":
            h, w = self.scales[list(self.vocab).index(level)]
            return h * w
        return self.positions

    @property
    def positions(self) -> int:
        """Token positions per image (h*w, or N; multiscale: the sum over scales)."""
        if self.layout == "multiscale":
            return sum(h * w for h, w in self.scales)
        return math.prod(self.grid)

    @property
    def tokens_per_image(self) -> int:
        return self.positions * len(self.vocab) if self.layout == "residual" else self.positions

    @property
    def bits_per_image(self) -> float:
        """Bits to store one image's codes: sum over tokens of log2(vocab)."""
        if self.layout == "multiscale":
            return float(sum(self.level_positions(k) * math.log2(v) for k, v in self.vocab.items()))
        return float(self.positions * sum(math.log2(v) for v in self.vocab.values()))


# -----------------------------------------------------------------------------
# Quantizer result
# -----------------------------------------------------------------------------
@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    - ``quantized``: features ``[B, C, h, w]`` to decode (straight-through
      gradients to the encoder when training);
    - ``codes``: the integer codes, see :class:`Codes` (a continuous
      tokenizer's training pass gives its :class:`Latents` here);
    - ``losses``: named scalar loss terms the trainer adds (already weighted);
    - ``stats``: named scalar statistics for the training log (e.g. batch
      perplexity), best as 0-dim tensors: the trainer reads them at its log
      lines only (``batch/<name>`` in metrics.jsonl).
    """

    quantized: Tensor
    codes: Codes | Latents
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor | float] = field(default_factory=dict)

    def usage_counts(self) -> dict[str, Tensor]:
        """Per level, how often each code value was chosen in this batch (none for latents)."""
        if isinstance(self.codes, Latents):
            return {}
        return {
            name: torch.bincount(c.reshape(-1).long(), minlength=self.codes.vocab[name])
            for name, c in self.codes.levels.items()
        }


@dataclass
class TokenizerOutput:
    """A training forward pass: reconstruction plus everything losses need."""

    reconstruction: Tensor  # [B,3,H,W], raw decoder output (not clamped)
    quant: QuantizerOutput
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenizerInfo:
    """Metadata that the benchmark reports next to every number. ``codes``: a
    :class:`CodeSpec`, or a :class:`LatentSpec` for a continuous tokenizer."""

    resolution: int
    codes: CodeSpec | LatentSpec

    @property
    def continuous(self) -> bool:
        """True for a tokenizer without discrete codes (it encodes to :class:`Latents`)."""
        return isinstance(self.codes, LatentSpec)

    @property
    def token_grid(self) -> tuple[int, ...]:
        """``(h, w)``, or ``(N,)`` for a 1-D token sequence (a continuous tokenizer: its latent grid)."""
        return self.codes.grid

    @property
    def vocab(self) -> Mapping[str, int]:
        return self.codes.vocab

    @property
    def tokens_per_image(self) -> int:
        return self.codes.tokens_per_image

    @property
    def bits_per_image(self) -> float | None:
        """None for a continuous tokenizer."""
        return self.codes.bits_per_image

    def as_dict(self) -> dict[str, Any]:
        out = {
            "resolution": self.resolution,
            "layout": self.codes.layout,
            "token_grid": list(self.token_grid),
            "vocab": dict(self.vocab),
            "tokens_per_image": self.tokens_per_image,
            "bits_per_image": self.bits_per_image,
        }
        if self.continuous:
            out["latent_channels"] = self.codes.channels
        elif self.codes.scales:
            out["scales"] = [list(s) for s in self.codes.scales]
        return out


# -----------------------------------------------------------------------------
# Checks where codes enter: training, the bench, load_tokenizer
# -----------------------------------------------------------------------------
#: the largest vocabulary of one level (int64 ids; no metric allocates by the vocabulary)
MAX_LEVEL_VOCAB = 2 ** 62


def check_vocab(vocab: Any, owner: Any) -> None:
    """A :class:`ContractError` (exit 3) naming ``owner`` unless ``vocab`` maps level
    names to positive whole numbers of codes."""
    if not isinstance(vocab, Mapping) or not vocab:
        raise ContractError(f"{who(owner)}: its vocab is {vocab!r}, not a mapping of level name -> number of codes")
    for name, size in vocab.items():
        if not isinstance(name, str) or not name:
            raise ContractError(f"{who(owner)}: vocab level name {name!r} is not a non-empty string")
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_LEVEL_VOCAB:
            raise ContractError(f"{who(owner)}: vocab '{name}' = {size!r}: a vocabulary is a whole number of codes "
                                f"from 1 to 2^62 (a tokenizer without discrete codes declares "
                                "TokenizerInfo(resolution, LatentSpec(channels, grid)) and encodes to Latents)")


def check_codes(codes: Any, owner: Any, vocab: Mapping[str, int] | None = None, method: str = "encode") -> Codes:
    """``codes`` if they are :class:`Codes` of integer tensors inside their
    vocabulary (and ``vocab``'s levels when given), else a :class:`ContractError`
    naming ``owner`` and what is wrong."""
    quantizer = getattr(owner, "quantizer", None)  # a composed tokenizer's codes come from its quantizer
    owner_name = who(owner) + (f", its quantizer {who(quantizer)}" if isinstance(quantizer, torch.nn.Module) else "")
    if not isinstance(codes, Codes):
        raise ContractError(f"{owner_name}: {method}() returned {type(codes).__name__}, but the contract expects "
                            "tokzoo.api.Codes")
    if vocab is not None and dict(codes.vocab) != dict(vocab):
        raise ContractError(f"{owner_name}: {method}() gave codes of vocab {dict(codes.vocab)}, but its info "
                            f"declares {dict(vocab)}")
    for level, c in codes.levels.items():
        if not isinstance(c, Tensor):
            raise ContractError(f"{owner_name}: {method}() level '{level}' is a {type(c).__name__}, not a tensor")
        if c.dtype.is_floating_point or c.dtype.is_complex or c.dtype == torch.bool:
            raise ContractError(f"{owner_name}: {method}() level '{level}' holds {c.dtype} values; codes are integers "
                                "(a tokenizer without discrete codes declares LatentSpec and encodes to Latents)")
    full = [(level, c) for level, c in codes.levels.items() if c.numel()]
    if full:  # every level's range in one read on the host (one wait for the device, not two per level)
        ranges = torch.stack([torch.stack([c.min().long(), c.max().long()]).to(full[0][1].device)
                              for _, c in full]).tolist()
        for (level, _), (lo, hi) in zip(full, ranges):
            if lo < 0 or hi >= codes.vocab[level]:
                raise ContractError(f"{owner_name}: {method}() level '{level}' holds codes from {lo} to {hi}, outside "
                                    f"its vocabulary 0..{codes.vocab[level] - 1}")
    return codes


def check_latents(latents: Any, owner: Any, spec: LatentSpec | None = None, method: str = "encode") -> Latents:
    """``latents`` if they are :class:`Latents` of float values ``[B, C, h, w]`` or
    ``[B, N, C]`` (of ``spec``'s channels and grid when given), else a
    :class:`ContractError` naming ``owner``."""
    if isinstance(latents, Codes):
        raise ContractError(f"{who(owner)}: {method}() returned Codes, but its info declares a LatentSpec (a "
                            "continuous tokenizer); declare a CodeSpec for discrete codes")
    if not isinstance(latents, Latents):
        raise ContractError(f"{who(owner)}: {method}() returned {type(latents).__name__}, but a continuous tokenizer "
                            "returns tokzoo.api.Latents")
    v = latents.values
    if not isinstance(v, Tensor) or not v.dtype.is_floating_point or v.dim() not in (3, 4):
        what = f"{v.dtype} values of {v.dim()} dimensions" if isinstance(v, Tensor) else type(v).__name__
        raise ContractError(f"{who(owner)}: {method}() gave Latents of {what}; latents are float [B, C, h, w] "
                            "or [B, N, C]")
    if spec is not None and (latents.channels, latents.grid) != (spec.channels, tuple(spec.grid)):
        raise ContractError(f"{who(owner)}: {method}() gave latents of {latents.channels} channels on "
                            f"{latents.grid}, but its info declares {spec.channels} on {tuple(spec.grid)}")
    return latents


def check_encoded(out: Any, owner: Any, info: Any, method: str = "encode") -> Codes | Latents:
    """What ``owner.encode`` gave, checked against its ``info``: :class:`Codes`
    inside the vocabulary, or :class:`Latents` of its :class:`LatentSpec`."""
    spec = getattr(info, "codes", None)
    if isinstance(spec, LatentSpec):
        return check_latents(out, owner, spec, method)
    if isinstance(out, Latents):
        raise ContractError(f"{who(owner)}: {method}() returned Latents, but its info declares discrete codes "
                            "(a CodeSpec); a continuous tokenizer declares TokenizerInfo(resolution, "
                            "LatentSpec(channels, grid))")
    return check_codes(out, owner, getattr(info, "vocab", None), method)


def check_declared(info: Any, owner: Any) -> None:
    """``owner``'s declared codes: a positive vocabulary, or a :class:`LatentSpec`."""
    if isinstance(getattr(info, "codes", None), LatentSpec):
        return
    check_vocab(getattr(info, "vocab", None), owner)
