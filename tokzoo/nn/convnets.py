"""Convolutional encoder / decoder in the taming-transformers / LlamaGen style.

ResNet blocks with GroupNorm + SiLU, a channel multiplier per resolution level,
stride-2 downsampling between levels and nearest upsampling on the way back.
``ch=128, ch_mult=(1,1,2,2,4)`` is LlamaGen's VQ-16 (16x downsampling).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tokzoo.api import Decoder, Encoder


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, ch) if ch % min(32, ch) == 0 else 1, ch, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, plus a skip connection. With
    ``checkpoint_activations`` (the trainer sets it: ``trainer.checkpoint_activations``)
    a training pass keeps only the block's input and recomputes the rest in backward."""

    checkpoint_activations = False

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = nn.Sequential(
            _norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.checkpoint_activations and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.block(x)


class ConvEncoder(Encoder):
    """Images ``[B,3,H,W]`` in ``[0,1]`` -> features ``[B,z_channels,H/f,W/f]``,
    ``f = 2 ** (len(ch_mult) - 1)``."""

    def __init__(self, ch: int = 64, ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 z_channels: int = 64, in_channels: int = 3):
        super().__init__()
        self.out_channels = z_channels
        self.downsample = 2 ** (len(ch_mult) - 1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        cur = ch
        for i, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(cur, ch * mult))
                cur = ch * mult
            if i != len(ch_mult) - 1:
                layers.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        layers += [ResBlock(cur, cur), _norm(cur), nn.SiLU(), nn.Conv2d(cur, z_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images * 2 - 1)  # networks see [-1, 1]


class ConvDecoder(Decoder):
    """Features ``[B,z_channels,h,w]`` -> images ``[B,3,h*f,w*f]`` nominally in ``[0,1]``."""

    def __init__(self, ch: int = 64, ch_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1,
                 z_channels: int = 64, out_channels: int = 3):
        super().__init__()
        self.in_channels = z_channels
        self.upsample = 2 ** (len(ch_mult) - 1)
        cur = ch * ch_mult[-1]
        layers: list[nn.Module] = [nn.Conv2d(z_channels, cur, 3, padding=1), ResBlock(cur, cur)]
        for i, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(cur, ch * mult))
                cur = ch * mult
            if i != 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cur, cur, 3, padding=1)]
        layers += [_norm(cur), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(cur, out_channels, 3, padding=1)

    def forward(self, quantized: Tensor) -> Tensor:
        return (self.conv_out(self.net(quantized)) + 1) / 2

    def last_layer(self) -> Tensor:
        return self.conv_out.weight
