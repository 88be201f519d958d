"""A small LlamaGen-style class-conditional GPT over a tokenizer's token ids.

Written once, for every probe that needs a language model on tokens (the AR
probe of ``tokzoo bench --metrics ar-probe``; the question probe,
``vqa-probe``, in its prefix mode: :meth:`GPT.prefix_hidden`).

- **Sequence**: ``[class, t_0, ..., t_{L-1}]``: a class embedding is the
  prefix; the model predicts ``t_i`` at position ``i`` (teacher forcing).
  Class ``num_classes`` is the *null* class: in training a label is replaced
  by it with probability ``class_dropout`` (0.1), so that classifier-free
  guidance works at sampling time.
- **Tokens**: fresh embeddings of ``Codes.token_ids()`` (the sequence a
  language model sees, in that order, with the tokenizer's flat vocabulary);
  an untied output head, zero-initialised (so an untrained model predicts the
  uniform distribution: ``L * log2(V)`` bits per image).
- **Positions**: rotary. ``2d`` (LlamaGen's, for one token per grid cell: half
  of each head rotates with the row, half with the column) or ``1d`` (the
  token's index, for any other sequence, e.g. a residual layout's depth-major
  tokens), or ``multiscale`` (a multi-scale layout's scales one after the
  other: each token rotates with its cell's centre in the finest grid's
  coordinates, as ``2d``, and a learned scale embedding is added to its
  input). The class position is not rotated (cos 1, sin 0); LlamaGen's code
  gives it cos = sin = 0, which zeroes its query and key.
- **Body**: pre-norm blocks (RMSNorm, causal attention through torch's
  ``scaled_dot_product_attention``, SwiGLU MLP), dropout on residual branches.
- **Sampling**: :func:`sample`: temperature, top-k off, top-p 1, CFG
  ``logits = uncond + scale * (cond - uncond)`` (scale 1: conditional only,
  0: unconditional), seeded inverse-CDF draws in float64 on the model's
  device (uniform numbers from a seeded CPU generator, drawn at once), with a
  static KV cache (L incremental steps) or without (L full passes; the same
  tokens, for checking).
- **Training and measuring**: :mod:`tokzoo.nn.gpt_train` (``train_gpt``,
  ``nll_bits``, ``middle_features``, the recipe's ``fit``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.device import autocast_to

__all__ = ["GPT", "GPTConfig", "GPT_SIZES", "sample", "prefix_mask"]

#: named sizes (width, depth, heads): ``micro`` for tests and quick checks, ``tiny`` the CPU default,
#: ``gpt-b`` LlamaGen's GPT-B (12 layers, 768 wide; 111M parameters with its 16,384 vocabulary)
GPT_SIZES = {"micro": {"width": 64, "depth": 2, "heads": 2},
             "tiny": {"width": 128, "depth": 4, "heads": 4},
             "gpt-b": {"width": 768, "depth": 12, "heads": 12}}


#: the largest token vocabulary a GPT is built for (its embedding and head are vocabulary x width)
MAX_VOCAB = 2 ** 20


@dataclass(frozen=True)
class GPTConfig:
    vocab: int  # flat token vocabulary (Codes.token_vocab_size)
    length: int  # tokens per image
    num_classes: int  # real classes; index num_classes is the null class
    width: int = 128
    depth: int = 4
    heads: int = 4
    dropout: float = 0.1  # on residual branches (training only)
    class_dropout: float = 0.1  # P(label -> null class) in training
    positions: str = "1d"  # "1d" | "2d" | "multiscale"
    grid: tuple[int, int] = field(default=(0, 0))  # (h, w) for "2d"; the finest scale for "multiscale"
    scales: tuple[tuple[int, int], ...] = ()  # "multiscale": each scale's (h, w), coarse to fine

    def __post_init__(self):
        if not isinstance(self.vocab, int) or not 1 <= self.vocab <= MAX_VOCAB:
            raise ValueError(f"a vocabulary of {self.vocab} token ids is beyond the GPT's bound of {MAX_VOCAB} "
                             "(2^20: its embedding and head grow with the vocabulary)")
        if self.width % self.heads or (self.width // self.heads) % 4:
            raise ValueError(f"GPT width {self.width} must split into {self.heads} heads of a multiple of 4 dims")
        if self.positions == "2d" and self.grid[0] * self.grid[1] != self.length:
            raise ValueError(f"2d positions need a grid of {self.length} cells, not {self.grid}")
        if self.positions not in ("1d", "2d", "multiscale"):
            raise ValueError(f"positions must be '1d', '2d' or 'multiscale', not {self.positions!r}")
        if self.positions == "multiscale" and sum(h * w for h, w in self.scales) != self.length:
            raise ValueError(f"multiscale positions need scales of {self.length} cells in all, not {self.scales}")


def _rotary_angles(cfg: GPTConfig, base: float = 10000.0) -> Tensor:
    """Angles ``[L + 1, head_dim / 2]`` of the input positions: 0 (the class,
    unrotated) then the positions of ``t_0 .. t_{L-1}``."""
    d = cfg.width // cfg.heads
    if cfg.positions == "1d":
        inv = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)  # [d/2]
        pos = torch.arange(1, cfg.length + 1, dtype=torch.float64)  # token i at position i + 1
        ang = pos[:, None] * inv[None]
    else:
        H, W = cfg.grid
        half = d // 2
        inv = 1.0 / base ** (torch.arange(0, half, 2, dtype=torch.float64) / half)  # [d/4]
        rows, cols = [], []
        for h, w in (cfg.scales if cfg.positions == "multiscale" else [(H, W)]):  # cell centres in the finest grid
            rows.append(((torch.arange(h, dtype=torch.float64) + 0.5) * H / h - 0.5).repeat_interleave(w))
            cols.append(((torch.arange(w, dtype=torch.float64) + 0.5) * W / w - 0.5).repeat(h))
        rows, cols = torch.cat(rows), torch.cat(cols)
        ang = torch.cat([rows[:, None] * inv[None], cols[:, None] * inv[None]], dim=1)  # [L, d/2]
    return torch.cat([torch.zeros(1, ang.shape[1], dtype=torch.float64), ang])


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs ``(x[2i], x[2i+1])`` of ``x [B, H, T, d]`` by angles with ``cos``/``sin`` ``[T, d/2]``."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.proj = nn.Linear(cfg.width, cfg.width, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None,
                pos: Tensor | None = None, upto: int | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if pos is not None:  # one step with the static cache (GPT.setup_cache): written in place, read whole,
            self.k_cache.index_copy_(2, pos.view(1), k.to(self.k_cache.dtype))  # later positions masked
            self.v_cache.index_copy_(2, pos.view(1), v.to(self.v_cache.dtype))
            q, k, v = q.to(self.k_cache.dtype), self.k_cache[:, :, :upto], self.v_cache[:, :, :upto]
        if mask is not None:  # prefix mode (see prefix_mask), or the cached step's positions <= pos
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif upto is not None:  # a cached step reading positions 0 .. pos only: all of them visible
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        hidden = 32 * math.ceil(cfg.width * 8 / 3 / 32)  # SwiGLU at about 4x parameters, as LlamaGen
        self.norm1, self.norm2 = nn.RMSNorm(cfg.width, eps=1e-5), nn.RMSNorm(cfg.width, eps=1e-5)
        self.attn = Attention(cfg)
        self.w1, self.w3 = nn.Linear(cfg.width, hidden, bias=False), nn.Linear(cfg.width, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.width, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None,
                pos: Tensor | None = None, upto: int | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cos, sin, mask, pos, upto))
        h = self.norm2(x)
        return x + self.drop(self.w2(F.silu(self.w1(h)) * self.w3(h)))


class GPT(nn.Module):
    """Class-conditional decoder-only transformer over token ids (see the module docstring)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.width)  # + the null class
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.width)
        # multiscale: which scale each token is, and a learned embedding of it (added to the token's)
        self.scale_emb = nn.Embedding(len(cfg.scales), cfg.width) if cfg.positions == "multiscale" else None
        scale_of = [k for k, (h, w) in enumerate(cfg.scales) for _ in range(h * w)] if self.scale_emb is not None else []
        self.register_buffer("scale_of", torch.tensor(scale_of, dtype=torch.long), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.RMSNorm(cfg.width, eps=1e-5)
        self.head = nn.Linear(cfg.width, cfg.vocab, bias=False)
        ang = _rotary_angles(cfg)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.weight)

    @property
    def null_class(self) -> int:
        return self.cfg.num_classes

    def embed_tokens(self, ids: Tensor, start: int = 0) -> Tensor:
        """Input embeddings ``[B, T, width]`` of tokens ``ids [B, T]`` that stand at
        token positions ``start ..``: ``tok_emb``, plus the scale's embedding (multiscale)."""
        x = self.tok_emb(ids)
        if self.scale_emb is not None:
            x = x + self.scale_emb(self.scale_of[start:start + ids.shape[1]])
        return x

    def _inputs(self, classes: Tensor, ids: Tensor) -> Tensor:
        return torch.cat([self.class_emb(classes)[:, None], self.embed_tokens(ids)], dim=1)

    def hidden(self, classes: Tensor, ids: Tensor, upto: int | None = None) -> Tensor:
        """Hidden states ``[B, 1 + ids.shape[1], width]`` of ``[class, ids]`` after
        ``upto`` blocks (all, then the final norm, when None)."""
        x = self._inputs(classes, ids)
        T = x.shape[1]
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        for i, blk in enumerate(self.blocks):
            if upto is not None and i == upto:
                return x
            x = blk(x, cos, sin)
        return self.norm(x)

    def forward(self, classes: Tensor, ids: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, L, V]`` predicting ``ids [B, L]`` given ``classes [B]``."""
        return self.head(self.hidden(classes, ids[:, :-1]))

    def prefix_hidden(self, prefix: Tensor, queries: Tensor) -> Tensor:
        """Prefix mode: final hidden states ``[B, K, width]`` of ``K`` query tokens
        (``queries [K]``: indices of the class table, e.g. one per question) read
        after a prefix of ``L = cfg.length`` input embeddings (``prefix [B, L,
        width]``: :meth:`embed_tokens` of token ids, or projected features) under
        :func:`prefix_mask`: the prefix attends to all of itself, each query to
        the prefix and itself, so the answers are those of ``K`` separate
        sequences ``[prefix, query]``. The prefix keeps the token positions; the
        queries are unrotated, as the class prefix."""
        B, L, _ = prefix.shape
        K = len(queries)
        x = torch.cat([prefix, self.class_emb(queries)[None].expand(B, K, -1)], dim=1)
        cos = torch.cat([self.cos[1:L + 1], self.cos[:1].expand(K, -1)]).to(x.dtype)
        sin = torch.cat([self.sin[1:L + 1], self.sin[:1].expand(K, -1)]).to(x.dtype)
        mask = prefix_mask(L, K, x.device)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask=mask)
        return self.norm(x[:, L:])

    # -- incremental decoding with a static KV cache (gpt-fast's shape: compile-friendly) --------
    def setup_cache(self, batch: int, dtype: torch.dtype = torch.float32) -> None:
        """Zeroed keys and values ``[batch, heads, L + 1, head_dim]`` of every
        block, allocated once for the whole sequence (buffers, so a compiled
        :meth:`decode` sees fixed addresses; a cache of the same shape is
        zeroed in place, so a CUDA graph recorded on it stays valid);
        :meth:`drop_cache` frees them."""
        size = (batch, self.cfg.heads, self.cfg.length + 1, self.cfg.width // self.cfg.heads)
        for blk in self.blocks:
            for name in ("k_cache", "v_cache"):
                old = blk.attn._buffers.get(name)
                if old is not None and tuple(old.shape) == size and old.dtype == dtype:
                    old.zero_()
                else:
                    blk.attn.register_buffer(name, torch.zeros(size, dtype=dtype, device=self.cos.device),
                                             persistent=False)

    def drop_cache(self) -> None:
        for blk in self.blocks:
            for name in ("k_cache", "v_cache"):
                blk.attn._buffers.pop(name, None)

    def _cached(self, x: Tensor, pos: Tensor, upto: int | None) -> Tensor:
        at = pos.view(1)  # index_select, not [pos]: indexing by a 0-d tensor reads it on the host
        cos, sin = self.cos.index_select(0, at).to(x.dtype), self.sin.index_select(0, at).to(x.dtype)
        # the whole cache under a mask of positions <= pos (fixed shapes), or its first `upto` positions
        mask = (torch.arange(self.cfg.length + 1, device=x.device) <= pos)[None] if upto is None else None
        for blk in self.blocks:
            x = blk(x, cos, sin, mask, pos, upto)
        return self.head(self.norm(x))[:, -1]

    def prefill(self, classes: Tensor) -> Tensor:
        """The cached step at input position 0, the class prefix: logits ``[B, V]`` of ``t_0``."""
        return self._cached(self.class_emb(classes)[:, None], torch.zeros((), dtype=torch.long,
                                                                          device=self.cos.device), 1)

    def decode(self, ids: Tensor, pos: Tensor, upto: int | None = None) -> Tensor:
        """The cached step at input position ``pos`` (a 0-d long tensor, >= 1):
        token ``t_{pos-1}`` (``ids [B]``) in, logits ``[B, V]`` of ``t_pos`` out.
        ``upto`` None: every shape fixed (the whole cache, masked), so one compiled
        graph serves every position; ``upto = pos + 1`` (eager): only the
        positions written are read, which costs less where nothing is compiled."""
        x = self.tok_emb(ids)[:, None]
        if self.scale_emb is not None:
            x = x + self.scale_emb(self.scale_of.index_select(0, pos.view(1) - 1))
        return self._cached(x, pos, upto)


def prefix_mask(prefix: int, queries: int, device=None) -> Tensor:
    """Boolean attention mask ``[T, T]`` (True: may attend), ``T = prefix +
    queries``: the prefix attends to all of the prefix (bidirectional), each
    query to the prefix and to itself, never to another query."""
    T = prefix + queries
    mask = torch.zeros(T, T, dtype=torch.bool, device=device)
    mask[:, :prefix] = True
    q = torch.arange(prefix, T, device=device)
    mask[q, q] = True
    return mask


# -- sampling ------------------------------------------------------------------------------------
def _guided(logits: Tensor, B: int, cfg_scale: float, guided: bool) -> Tensor:
    if not guided:
        return logits
    cond, uncond = logits[:B], logits[B:]
    return uncond + cfg_scale * (cond - uncond)


def _draw(logits: Tensor, temperature: float, u: Tensor) -> Tensor:
    """One token per row by inverse CDF in float64 on the logits' device, at the uniform
    numbers ``u [B, 1]`` (float64, on that device): no host read."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    idx = torch.searchsorted(probs.cumsum(-1), u).clamp(max=probs.shape[1] - 1)
    return idx[:, 0]


@torch.no_grad()
def sample(model: GPT, classes: Tensor, cfg_scale: float = 1.0, temperature: float = 1.0,
           generator: torch.Generator | None = None, use_cache: bool = True,
           autocast: torch.dtype | None = None, compile: bool = False) -> Tensor:
    """Token ids ``[B, L]`` (on the CPU) for ``classes [B]`` (see the module docstring).

    On the model's device throughout: the ``L x B`` uniform numbers are drawn once from
    ``generator`` (a CPU generator: the same stream as one draw per token, so the same
    tokens on every device up to float64 rounding) and moved there in one copy; each
    token is drawn there; the KV cache is allocated once; the tokens are read back once.
    ``autocast``: the dtype the GPT runs in (None: float32; the draws stay float64);
    ``compile``: the decode step through ``torch.compile`` (CUDA graphs on a GPU)."""
    model.eval()
    generator = generator or torch.Generator().manual_seed(0)
    dev = model.cos.device
    B, L = len(classes), model.cfg.length
    guided = cfg_scale != 1.0
    cls = classes.to(dev).long()
    if guided:  # the conditional and the null-class rows in one batch
        cls = torch.cat([cls, torch.full_like(cls, model.null_class)])
    uniforms = torch.rand(L, B, 1, generator=generator, dtype=torch.float64).to(dev)
    out = torch.zeros(B, L, dtype=torch.long, device=dev)
    with autocast_to(dev, autocast):
        if not use_cache:
            for i in range(L):
                ids = torch.cat([out[:, :i], out[:, :i]]) if guided else out[:, :i]
                logits = model.head(model.hidden(cls, ids))[:, -1]
                out[:, i] = _draw(_guided(logits, B, cfg_scale, guided), temperature, uniforms[i])
            return out.cpu()
        model.setup_cache(len(cls), autocast or model.head.weight.dtype)
        decode = torch.compile(model.decode, mode="reduce-overhead" if dev.type == "cuda" else None,
                               fullgraph=True) if compile else model.decode
        positions = torch.arange(L + 1, device=dev)
        try:
            logits = model.prefill(cls)
            for i in range(L):
                nxt = _draw(_guided(logits, B, cfg_scale, guided), temperature, uniforms[i])
                out[:, i] = nxt
                if i + 1 < L:
                    logits = decode(torch.cat([nxt, nxt]) if guided else nxt, positions[i + 1],
                                    *(() if compile else (i + 2,)))
                    logits = logits.clone() if compile else logits  # a CUDA graph's output is overwritten
        finally:
            if not compile:  # a compiled step keeps its cache for the next batch of the same size
                model.drop_cache()
    return out.cpu()
