"""A VAR-style multi-scale residual quantizer (Tian et al., 2024): the
encoder's grid is quantized as a residual over growing scales, coarse to fine
(1x1, 2x2, ..., the full grid), each scale's codes drawn from one shared
codebook (or one per scale). Its codes are tokzoo's ``multiscale`` layout: one
level per scale, ``s1``, ``s2``, ..., each a grid of its own size.

At scale ``k`` the residual ``f - f_hat`` is area-downsampled to ``s_k x
s_k``, each cell takes its nearest code, and the codes' vectors, bicubically
upsampled to the full grid, are added to ``f_hat``. Losses as VAR's:
``codebook`` = ||f_hat - sg(f)||^2, ``commitment`` = beta * ||sg(f_hat) - f||^2;
straight-through gradients to the encoder. VAR's per-scale refinement
convolutions (phi) are left out: ``lookup`` is then the exact inverse of the
codes, and the codes alone are what the AR probe models."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.api import Codes, Quantizer, QuantizerOutput
from tokzoo.errors import ConfigError
from tokzoo.nn import batch_perplexity, nearest_code


class MultiScaleVQ(Quantizer):
    """Residual quantization over scales (see the module docstring)."""

    layout = "multiscale"

    def __init__(self,
                 codebook_size: int = 512,  # codes per codebook
                 dim: int = 8,  # the channels quantized
                 scales: list[int] = (1, 2, 4, 8),  # each scale's grid side, coarse to fine; the last: the encoder's grid
                 beta: float = 0.25,  # the commitment loss weight
                 shared: bool = True):  # one codebook for every scale (VAR's), or one per scale
        super().__init__()
        scales = tuple(int(s) for s in scales)
        if not scales or any(s < 1 for s in scales) or list(scales) != sorted(set(scales)):
            raise ConfigError(f"msvq: scales are grid sides growing from coarse to fine, e.g. [1, 2, 4, 8], "
                              f"not {list(scales)}")
        if codebook_size < 1 or dim < 1:
            raise ConfigError(f"msvq: codebook_size and dim must be >= 1 (got {codebook_size}, {dim})")
        self.codebook_size, self.dim, self.scales, self.beta, self.shared = codebook_size, dim, scales, beta, shared
        self.codebooks = nn.ModuleList(nn.Embedding(codebook_size, dim) for _ in range(1 if shared else len(scales)))
        for cb in self.codebooks:
            nn.init.uniform_(cb.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @property
    def vocab(self) -> dict[str, int]:
        return {f"s{s}": self.codebook_size for s in self.scales}

    def _codebook(self, k: int) -> Tensor:
        return self.codebooks[0 if self.shared else k].weight

    def _up(self, q: Tensor, size: tuple[int, int]) -> Tensor:
        return q if q.shape[-2:] == size else F.interpolate(q, size=size, mode="bicubic", align_corners=False)

    def forward(self, features: Tensor) -> QuantizerOutput:
        B, C, h, w = features.shape
        if (h, w) != (self.scales[-1],) * 2:
            raise ConfigError(f"msvq: its finest scale is {self.scales[-1]}, the features are {h}x{w}")
        f = features.float()
        f_hat = torch.zeros_like(f)
        levels, stats = {}, {}
        for k, s in enumerate(self.scales):
            rest = (f - f_hat).detach()
            small = rest if s == h else F.interpolate(rest, size=(s, s), mode="area")
            idx = nearest_code(small.permute(0, 2, 3, 1).reshape(-1, C), self._codebook(k), cosine=False)
            q = self._codebook(k)[idx].reshape(B, s, s, C).permute(0, 3, 1, 2)
            f_hat = f_hat + self._up(q, (h, w))
            levels[f"s{s}"] = idx.reshape(B, s, s)
            stats[f"perplexity/s{s}"] = batch_perplexity(idx, self.codebook_size)
        losses = {}
        if self.training:
            losses["codebook"] = F.mse_loss(f_hat, f.detach())
            losses["commitment"] = self.beta * F.mse_loss(f, f_hat.detach())
        quantized = (f + (f_hat - f).detach()).to(features.dtype)  # straight-through
        return QuantizerOutput(quantized.contiguous(), self.codes(levels), losses, stats)

    def lookup(self, codes: Codes) -> Tensor:
        """Codes -> ``f_hat [B, dim, h, w]``: every scale's vectors, upsampled and summed."""
        g = self.scales[-1]
        out = None
        for k, s in enumerate(self.scales):
            q = self._codebook(k)[codes.levels[f"s{s}"]].permute(0, 3, 1, 2)
            q = self._up(q, (g, g))
            out = q if out is None else out + q
        return out.contiguous()
