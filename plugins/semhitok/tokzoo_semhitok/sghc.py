"""The Semantic-Guided Hierarchical Codebook (SGHC) quantizer.

Every semantic code ``i`` (of ``K``) owns a texture sub-codebook of ``m``
entries. A pixel feature at a position is quantized only among the ``m``
entries of the sub-codebook its position's semantic code selects: the lookup
gathers ``[N, m, d]`` candidates and never forms an ``[N, K*m]`` distance
matrix, so its cost does not grow with ``K``.

Codes are hierarchical: ``semantic`` (i, vocab K) and ``pixel`` (j, vocab m),
flattened to one token per position, ``h = i * m + j``.

Upkeep: the sub-codebooks are updated by EMA of their assigned features, and
a sub-code unused for ``restart_every`` steps while its semantic code was in
use is re-initialised from a feature that this semantic code was assigned.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.api import Codes, QuantizerOutput, Quantizer
from tokzoo.nn import batch_perplexity, code_counts


class SGHCQuantizer(Quantizer):
    """Pixel features ``[B,dim,h,w]`` + semantic codes ``[B,h,w]`` -> hierarchical codes."""

    layout = "hierarchical"

    def __init__(self, num_semantic: int = 24576, sub_size: int = 8, dim: int = 8, beta: float = 0.25,
                 l2_norm: bool = True, ema: bool = True, decay: float = 0.99, restart_every: int = 100):
        super().__init__()
        self.K, self.m, self.dim, self.beta = num_semantic, sub_size, dim, beta
        self.l2_norm, self.ema, self.decay, self.restart_every = l2_norm, ema, decay, restart_every
        self.table = nn.Parameter(torch.randn(num_semantic, sub_size, dim), requires_grad=not ema)
        if ema:
            self.register_buffer("ema_count", torch.ones(num_semantic, sub_size))
            self.register_buffer("ema_sum", self.table.detach().clone())
        self.register_buffer("usage", torch.zeros(num_semantic, sub_size))
        self.register_buffer("parent_usage", torch.zeros(num_semantic))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @property
    def vocab(self) -> dict[str, int]:
        return {"semantic": self.K, "pixel": self.m}

    def subcodebooks(self) -> Tensor:
        return F.normalize(self.table, dim=-1) if self.l2_norm else self.table

    def nearest(self, z: Tensor, parent: Tensor) -> Tensor:
        """``z [N,d]``, ``parent [N]`` -> index ``j [N]`` within each parent's sub-codebook."""
        cand = self.subcodebooks()[parent]  # [N, m, d]
        if self.l2_norm:
            return torch.einsum("nd,nmd->nm", z, cand).argmax(dim=1)
        d = (z[:, None, :] - cand).pow(2).sum(-1)
        return d.argmin(dim=1)

    def forward(self, features: Tensor, parent_codes: Tensor | None = None) -> QuantizerOutput:
        if parent_codes is None:
            raise ValueError("SGHCQuantizer needs the semantic codes of each position (parent_codes)")
        B, C, h, w = features.shape
        z = features.permute(0, 2, 3, 1).reshape(-1, C).float()
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        parent = parent_codes.reshape(-1).long()
        if self.training:
            self._maybe_restart(z.detach(), parent)
        j = self.nearest(z.detach(), parent)
        q = self.subcodebooks()[parent, j]
        losses: dict[str, Tensor] = {}
        if self.training:
            losses["pixel_commitment"] = self.beta * F.mse_loss(z, q.detach())
            if self.ema:
                self._ema_update(z.detach(), parent, j)
            else:
                losses["pixel_codebook"] = F.mse_loss(q, z.detach())
            with torch.no_grad():
                self.usage.index_put_((parent, j), torch.ones_like(j, dtype=self.usage.dtype), accumulate=True)
                self.parent_usage.index_add_(0, parent, torch.ones_like(parent, dtype=self.parent_usage.dtype))
                self.steps += 1
        q = z + (q - z).detach()
        quantized = q.reshape(B, h, w, C).permute(0, 3, 1, 2).contiguous().to(features.dtype)
        codes = Codes({"semantic": parent.reshape(B, h, w), "pixel": j.reshape(B, h, w)}, self.vocab, "hierarchical")
        stats = {"perplexity/pixel": batch_perplexity(parent * self.m + j, self.K * self.m)}
        return QuantizerOutput(quantized, codes, losses, stats)

    def lookup(self, codes: Codes) -> Tensor:
        q = self.subcodebooks()[codes.levels["semantic"], codes.levels["pixel"]]  # [B,h,w,d]
        return q.permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def _ema_update(self, z: Tensor, parent: Tensor, j: Tensor) -> None:
        flat = parent * self.m + j
        count = code_counts(flat, self.K * self.m)
        summed = torch.zeros(self.K * self.m, self.dim, device=z.device).index_add_(0, flat, z)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
            torch.distributed.all_reduce(summed)
        touched = count > 0  # only sub-codes seen in this batch move (others keep their value); a mask,
        c = self.ema_count.view(-1)  # not boolean indexing, which reads the count of True on the host
        s = self.ema_sum.view(-1, self.dim)
        c.copy_(torch.where(touched, c * self.decay + count * (1 - self.decay), c))
        s.copy_(torch.where(touched[:, None], s * self.decay + summed * (1 - self.decay), s))
        table = self.table.data.view(-1, self.dim)
        table.copy_(torch.where(touched[:, None], s / c[:, None].clamp(min=1e-5), table))

    @torch.no_grad()
    def _maybe_restart(self, z: Tensor, parent: Tensor) -> None:
        """Every ``restart_every`` steps, each unused sub-code of a used semantic code
        takes a feature drawn at random among this batch's positions of that code.

        Decided on the device, never read on the host: each step draws one
        candidate per sub-code (positions grouped by semantic code, a uniform
        offset into the code's group) and a mask says which take theirs."""
        n = z.shape[0]
        if n == 0:
            return
        due = (self.steps >= self.restart_every) & (self.steps % self.restart_every == 0)  # 0-dim, on the device
        per_code = code_counts(parent, self.K).long()  # this batch's positions per semantic code
        dead = (self.usage == 0) & (self.parent_usage[:, None] > 0) & (per_code[:, None] > 0) & due  # [K, m]
        grouped = torch.argsort(parent, stable=True)  # this batch's positions, grouped by semantic code
        start = torch.cumsum(per_code, 0) - per_code
        offset = (torch.rand(self.K, self.m, device=z.device) * per_code[:, None]).long()
        pick = z[grouped[(start[:, None] + offset).clamp(max=n - 1)]]  # [K, m, d]
        self.table.data.copy_(torch.where(dead[..., None], pick.to(self.table.dtype), self.table.data))
        if self.ema:
            self.ema_sum.copy_(torch.where(dead[..., None], pick, self.ema_sum))
            self.ema_count.copy_(torch.where(dead, torch.ones_like(self.ema_count), self.ema_count))
        keep = ~due
        self.usage.mul_(keep)
        self.parent_usage.mul_(keep)
