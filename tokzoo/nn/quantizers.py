"""Nearest-neighbour vector quantization with an l2-normalised codebook.

Follows the improved-VQGAN / LlamaGen recipe: features are projected to a
low-dimensional space by the caller, both features and codes are
l2-normalised, and the nearest code by cosine similarity is chosen. Training
uses the codebook + commitment loss with straight-through gradients, or EMA
codebook updates (``ema=True``), and can restart codes that fall unused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.api import Codes, QuantizerOutput, Quantizer


#: the most score matrix (positions x codes, float32) a nearest-code search holds at once: positions
#: are searched a chunk at a time below it (the codes are the same as in one pass: tests/test_api.py)
SEARCH_CHUNK_BYTES = 64 * 2 ** 20


def nearest_code(z: Tensor, codebook: Tensor, cosine: bool, chunk_bytes: int = SEARCH_CHUNK_BYTES) -> Tensor:
    """``z [N, d]`` -> index ``[N]`` of the nearest row of ``codebook [K, d]``: the largest dot
    product where ``cosine`` (both already l2-normalised), else the smallest squared distance;
    ``chunk_bytes // (4 K)`` positions at a time, so the score matrix never exceeds a chunk.
    The squared distance is searched as ``|c|^2 - 2 z.c`` in one ``addmm`` (``|z|^2`` is the
    same for every code of a row, so it cannot change the argmin): the score matrix is
    written once and read once, where the full formula made three more passes over it."""
    rows = max(1, chunk_bytes // (4 * max(1, codebook.shape[0])))
    cb_t = codebook.t()
    sq = None if cosine else codebook.pow(2).sum(1)[None]

    def search(x: Tensor) -> Tensor:
        if cosine:
            return (x @ cb_t).argmax(dim=1)
        return torch.addmm(sq, x, cb_t, alpha=-2).argmin(dim=1)

    if z.shape[0] <= rows:
        return search(z)
    return torch.cat([search(z[i:i + rows]) for i in range(0, z.shape[0], rows)])


def code_counts(codes: Tensor, n: int) -> Tensor:
    """How often each of ``n`` codes occurs in ``codes``: float32 ``[n]`` on their
    device. A scatter-add, not ``torch.bincount``, which on CUDA reads the
    largest code on the host first (a sync in every training step)."""
    flat = codes.reshape(-1).long()
    return torch.zeros(n, device=flat.device).index_add_(0, flat, torch.ones(flat.shape, device=flat.device))


def perplexity_of(counts: Tensor) -> Tensor:
    """exp(entropy) of a histogram of code counts: a 0-dim float64 tensor on its device."""
    p = counts.double() / counts.double().sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-30))).sum())


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of a histogram of code counts (float64), read on the host."""
    return float(perplexity_of(counts))


def batch_perplexity(codes: Tensor, n: int) -> Tensor:
    """exp(entropy) of the code histogram of one batch: a 0-dim tensor on the codes'
    device (a quantizer's ``stats``; the trainer reads it at its log lines only)."""
    return perplexity_of(code_counts(codes, n))


class VectorQuantizer(Quantizer):
    """Features ``[B,dim,h,w]`` -> nearest of ``codebook_size`` codes.

    Losses: ``codebook`` = ||sg(z) - q||^2 (not with EMA) and
    ``commitment`` = beta * ||z - sg(q)||^2, both on normalised vectors when
    ``l2_norm``. Codes are one level named ``level``.
    """

    layout = "grid"

    def __init__(self, codebook_size: int = 512, dim: int = 8, beta: float = 0.25, l2_norm: bool = True,
                 ema: bool = False, decay: float = 0.99, restart_unused: bool = False,
                 restart_every: int = 100, level: str = "code"):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be >= 1 (got {codebook_size}, {dim})")
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.l2_norm, self.ema, self.decay = l2_norm, ema, decay
        self.restart_unused, self.restart_every, self.level = restart_unused, restart_every, level
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if l2_norm:
            nn.init.normal_(self.embedding.weight)
        if ema:
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("ema_count", torch.ones(codebook_size))
            self.register_buffer("ema_sum", self.embedding.weight.detach().clone())
        self.register_buffer("usage_since_restart", torch.zeros(codebook_size))
        self.register_buffer("steps_since_restart", torch.zeros((), dtype=torch.long))

    @property
    def vocab(self) -> dict[str, int]:
        return {self.level: self.codebook_size}

    def codebook(self) -> Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def nearest(self, z_flat: Tensor) -> Tensor:
        """``[N,dim]`` (already normalised if ``l2_norm``) -> ``[N]`` code indices
        (:func:`nearest_code`: a chunk of positions at a time)."""
        return nearest_code(z_flat, self.codebook(), cosine=self.l2_norm)

    def forward(self, features: Tensor) -> QuantizerOutput:
        """Features ``[B, C, h, w]`` (a grid) or ``[B, N, C]`` (a 1-D sequence of N tokens, as a
        transformer gives them) -> codes ``[B, h, w]`` or ``[B, N]``, quantized features as given."""
        sequence = features.dim() == 3
        if sequence:
            B, N, C = features.shape
            z = features.reshape(-1, C).float()
        else:
            B, C, h, w = features.shape
            z = features.permute(0, 2, 3, 1).reshape(-1, C).float()
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        if self.training and self.restart_unused:
            self.maybe_restart(z.detach())  # before the lookup: the graph must not see weights change
        idx = self.nearest(z.detach())
        q = self.codebook()[idx]
        losses: dict[str, Tensor] = {}
        if self.training:
            losses["commitment"] = self.beta * F.mse_loss(z, q.detach())
            if self.ema:
                self.ema_update(z.detach(), idx)
            else:
                losses["codebook"] = F.mse_loss(q, z.detach())
            if self.restart_unused:
                self.usage_since_restart += code_counts(idx, self.codebook_size)
                self.steps_since_restart += 1
        q = z + (q - z).detach()  # straight-through
        if sequence:
            quantized = q.reshape(B, N, C).to(features.dtype)
            codes = Codes({self.level: idx.reshape(B, N)}, dict(self.vocab), "sequence")
        else:
            quantized = q.reshape(B, h, w, C).permute(0, 3, 1, 2).to(features.dtype)
            codes = Codes({self.level: idx.reshape(B, h, w)}, dict(self.vocab), "grid")
        stats = {f"perplexity/{self.level}": batch_perplexity(idx, self.codebook_size)}
        return QuantizerOutput(quantized.contiguous(), codes, losses, stats)

    def lookup(self, codes: Codes) -> Tensor:
        """Codes -> quantized features: ``[B, C, h, w]`` for a grid, ``[B, N, C]`` for a sequence."""
        idx = codes.levels[self.level]
        q = self.codebook()[idx]
        return q.contiguous() if idx.dim() == 2 else q.permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def ema_update(self, z: Tensor, idx: Tensor) -> None:
        onehot_count = code_counts(idx, self.codebook_size)
        summed = torch.zeros_like(self.ema_sum).index_add_(0, idx, z)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(onehot_count)
            torch.distributed.all_reduce(summed)
        self.ema_count.mul_(self.decay).add_(onehot_count, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(summed, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (n + self.codebook_size * 1e-5) * n
        self.embedding.weight.copy_(self.ema_sum / count[:, None])

    @torch.no_grad()
    def maybe_restart(self, z: Tensor) -> None:
        """Every ``restart_every`` steps, codes unused since the last restart
        are moved onto randomly chosen features of the current batch.

        Decided on the device, never read on the host: every training step
        draws a candidate feature per code and a mask (due, and unused) says
        which codes take theirs, so the step is the same graph each time."""
        if z.shape[0] == 0:
            return
        due = self.steps_since_restart >= self.restart_every  # 0-dim bool, on the device
        dead = (self.usage_since_restart == 0) & due
        pick = z[torch.randint(0, z.shape[0], (self.codebook_size,), device=z.device)]
        w = self.embedding.weight
        w.copy_(torch.where(dead[:, None], pick.to(w.dtype), w))
        if self.ema:
            self.ema_sum.copy_(torch.where(dead[:, None], pick, self.ema_sum))
            self.ema_count.copy_(torch.where(dead, torch.ones_like(self.ema_count), self.ema_count))
        keep = ~due
        self.usage_since_restart.mul_(keep)
        self.steps_since_restart.mul_(keep)
