"""A continuous tokenizer's side of the contract: the float :class:`Latents`
it encodes to instead of codes, and their shape (:class:`LatentSpec`).
Importable from :mod:`tokzoo.api`; the checks where they enter are
:mod:`tokzoo.codes`' (``check_latents``, ``check_encoded``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Mapping

from torch import Tensor

__all__ = ["LatentSpec", "Latents"]


@dataclass
class Latents:
    """What a *continuous* tokenizer (an autoencoder without a quantizer: SD-VAE,
    FLUX's VAE) encodes a batch to, instead of :class:`Codes`: float ``values``
    ``[B, C, h, w]`` (a grid of latent vectors) or ``[B, N, C]`` (a sequence).
    It has no token ids and no vocabulary: bench measures it as a reference
    row, marked "continuous" wherever it is shown."""

    values: Tensor
    layout: ClassVar[str] = "continuous"

    @property
    def batch_size(self) -> int:
        return int(self.values.shape[0])

    @property
    def grid(self) -> tuple[int, ...]:
        """The latent positions' shape: ``(h, w)``, or ``(N,)`` for a sequence."""
        v = self.values
        return tuple(int(d) for d in (v.shape[2:] if v.dim() == 4 else v.shape[1:2]))

    @property
    def channels(self) -> int:
        v = self.values
        return int(v.shape[1] if v.dim() == 4 else v.shape[-1])

    def token_ids(self) -> Tensor:
        raise TypeError("Latents are continuous: a continuous tokenizer has no token ids (it is a reference row, "
                        "not a discrete tokenizer)")

    def to(self, device) -> "Latents":
        return Latents(self.values.to(device))

    def head(self, k: int) -> "Latents":
        """The first ``k`` images' latents."""
        return Latents(self.values[:k])


@dataclass(frozen=True)
class LatentSpec:
    """The shape of a continuous tokenizer's :class:`Latents`: ``channels`` per
    latent vector on ``grid`` (``(h, w)`` or ``(N,)``). Declared as
    ``TokenizerInfo(resolution, LatentSpec(channels, grid))``."""

    channels: int
    grid: tuple[int, ...]
    layout: ClassVar[str] = Latents.layout

    def __post_init__(self):
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"LatentSpec.channels is a positive whole number, not {self.channels!r}")
        if not isinstance(self.grid, (tuple, list)) or len(self.grid) not in (1, 2) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.grid):
            raise ValueError(f"LatentSpec.grid is (h, w) or (N,) of positive whole numbers, not {self.grid!r}")
        object.__setattr__(self, "grid", tuple(self.grid))

    @property
    def vocab(self) -> Mapping[str, int]:
        """None: a continuous tokenizer has no vocabulary (an empty mapping)."""
        return MappingProxyType({})

    @property
    def positions(self) -> int:
        """Latent vectors per image (h*w, or N)."""
        return math.prod(self.grid)

    @property
    def tokens_per_image(self) -> int:
        return self.positions

    @property
    def bits_per_image(self) -> None:
        """None: float latents are not a bit budget."""
        return None
