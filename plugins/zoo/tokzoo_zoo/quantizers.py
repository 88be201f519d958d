"""vector-quantize-pytorch's quantizers behind tokzoo's Quantizer contract.

Each family is the library's own module, built with the library's own
parameter names and defaults (the schema is read from the library's
signature, so nothing is written twice). :class:`LibraryQuantizer` only
adapts shapes and names: features ``[B,C,h,w]`` go in as the sequence
``[B, h*w, C]`` the library expects, the quantized features come back as
``[B,C,h,w]``, the library's indices become :class:`tokzoo.api.Codes` (one
``grid`` level, or one level per depth for the residual families), and its
auxiliary loss is passed to the trainer under the family's loss name.
``lookup(codes)`` is the library's own decode path from indices.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
from torch import Tensor

from tokzoo.api import Codes, Quantizer, QuantizerOutput
from tokzoo.nn import batch_perplexity

#: parameters the wrapper sets itself (layout of the tensors, one codebook per level)
WRAPPER_OWNED = ("channel_last", "accept_image_fmap", "accept_3d_fmap", "channel_first", "is_channel_first",
                 "return_indices", "keep_num_codebooks_dim", "heads", "separate_codebook_per_head",
                 "num_codebooks", "spherical", "return_loss_breakdown")


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, (bool, int, float, str)) for v in value)
    return False


def library_schema(name: str, *classes: type, drop: tuple[str, ...] = ()) -> type:
    """A dataclass of the library's own parameters (names and defaults) of
    ``classes`` (the first one's, then the keyword arguments it forwards to the
    next), leaving out what the wrapper owns and what YAML cannot hold (callables,
    modules, dtypes). A forwarded parameter defaults to None, "the library's
    default": it is passed on only when set."""
    fields, seen, forwarded = [], set(), set()
    for depth, cls in enumerate(classes):
        for pname, p in inspect.signature(cls.__init__).parameters.items():
            if pname == "self" or pname in seen or pname in WRAPPER_OWNED or pname in drop:
                continue
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            seen.add(pname)
            if depth > 0:
                forwarded.add(pname)
                fields.append((pname, Any, dataclasses.field(default=None)))
            elif p.default is p.empty:
                fields.append((pname, Any, dataclasses.field(default="???")))
            elif _plain(p.default):
                d = p.default
                fields.append((pname, Any, dataclasses.field(default_factory=(lambda d=d: list(d)))
                               if isinstance(d, (list, tuple)) else dataclasses.field(default=d)))
    schema = dataclasses.make_dataclass(f"{name.title().replace('-', '')}Params", fields)
    schema.__forwarded__ = frozenset(forwarded)
    return schema


class LibraryQuantizer(Quantizer):
    """A vector-quantize-pytorch module as a tokzoo quantizer (see the module docstring)."""

    def __init__(self, module: torch.nn.Module, family: str, loss_name: str | None, dim: int,
                 channel_first: bool = False):
        super().__init__()
        self.lib, self.family, self.loss_name, self.channel_first = module, family, loss_name, channel_first
        self.dim = int(dim)  # the channels it quantizes (the library's dim, or its levels' count)
        size = module.codebook_size
        self.depth = int(getattr(module, "num_quantizers", 0) or 0)
        self.layout = "residual" if self.depth else "grid"
        self._vocab = ({f"depth{d}": int(size) for d in range(self.depth)} if self.depth
                       else {"code": int(size)})

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def forward(self, features: Tensor) -> QuantizerOutput:
        """``[B, C, h, w]`` (a grid) or ``[B, N, C]`` (a 1-D sequence, given to the library as it is)."""
        if features.dim() == 3:
            if self.channel_first:
                raise ValueError(f"the {self.family} quantizer here takes grids [B, C, h, w] only")
            B, N, C = features.shape
            shape, x = (N,), features
        else:
            B, C, h, w = features.shape
            shape = (h, w)
            x = features if self.channel_first else features.permute(0, 2, 3, 1).reshape(B, h * w, C)
        out = self.lib(x)
        quantized, indices = out[0], out[1]
        aux = out[2] if len(out) > 2 else None
        if not self.channel_first and len(shape) == 2:
            quantized = quantized.reshape(B, h, w, C).permute(0, 3, 1, 2)
        codes = self._codes(indices.long(), B, shape)
        losses = {}
        if self.loss_name and aux is not None and torch.is_tensor(aux) and aux.requires_grad:
            losses[self.loss_name] = aux.sum()
        stats = {f"perplexity/{lvl}": batch_perplexity(c, self._vocab[lvl]) for lvl, c in codes.levels.items()}
        return QuantizerOutput(quantized, codes, losses, stats)

    def _codes(self, indices: Tensor, B: int, shape: tuple[int, ...]) -> Codes:
        if self.depth:
            levels = {f"depth{d}": indices[..., d].reshape(B, *shape) for d in range(self.depth)}
        else:
            levels = {"code": indices.reshape(B, *shape)}
        return Codes(levels, self.vocab, "sequence" if self.layout == "grid" and len(shape) == 1 else self.layout)

    def library_indices(self, codes: Codes) -> Tensor:
        """Codes -> the indices the library itself returns (``[B, h*w]``, ``[B, h*w, depth]``, or a map)."""
        B = codes.batch_size
        if self.depth:
            return torch.stack([codes.levels[f"depth{d}"].reshape(B, -1) for d in range(self.depth)], -1)
        idx = codes.levels["code"]
        return idx if self.channel_first else idx.reshape(B, -1)

    def lookup(self, codes: Codes) -> Tensor:
        """Codes -> ``[B, C, h, w]`` for a grid, ``[B, N, C]`` for a sequence."""
        idx = self.library_indices(codes)
        decode = getattr(self.lib, "get_output_from_indices", None) or self.lib.indices_to_codes
        q = decode(idx)
        if self.channel_first:
            return q
        if len(codes.grid) == 1:
            return q.reshape(codes.batch_size, codes.grid[0], -1)
        h, w = codes.grid
        return q.reshape(codes.batch_size, h, w, -1).permute(0, 3, 1, 2)
