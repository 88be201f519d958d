"""The edge metric against known answers: the image itself keeps every edge, a flat
grey image none, blur and blobs fall in between; a blurry reconstruction that PSNR
ranks level with a sharp one is told apart."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokzoo.bench.edges import Edges, edge_scores
from tokzoo.errors import ConfigError
from tokzoo.measures import psnr_per_image


def _shapes(n=48, res=32):
    from tokzoo.data.preprocess import to_uint8
    from tokzoo.data.shapes import ShapesDataset

    ds = ShapesDataset("val", res, val_size=n)
    return to_uint8(torch.stack([ds[i]["image"] for i in range(n)]))


def test_known_answers():
    o = _shapes()
    f1, l1 = edge_scores(o, o)
    assert torch.all(f1 == 1) and torch.all(l1 == 0)
    grey = torch.full_like(o, 128)
    f1, _ = edge_scores(o, grey)
    assert float(f1.max()) == 0  # every original has an edge; grey has none
    blur = F.interpolate(F.interpolate(o.float(), scale_factor=0.25, mode="area"), size=o.shape[-2:],
                         mode="bilinear").round().clamp(0, 255).to(torch.uint8)
    blob = F.avg_pool2d(o.float(), 8).repeat_interleave(8, -1).repeat_interleave(8, -2).round().to(torch.uint8)
    fb, fo = edge_scores(o, blur)[0].mean(), edge_scores(o, blob)[0].mean()
    assert 0.2 < fo < fb < 0.9  # measured: blobs 0.39, a 4x blur 0.57


def test_blur_cannot_hide_behind_psnr():
    """Flat blobs of each 8x8 cell's mean colour (the issue's 'grey blobs') and a sharp reconstruction
    with noise at about the same PSNR: edges tell them apart."""
    o = _shapes()
    blur = F.avg_pool2d(o.float(), 8).repeat_interleave(8, -1).repeat_interleave(8, -2).round().to(torch.uint8)
    target = float(psnr_per_image(o, blur).mean())
    g = torch.Generator().manual_seed(0)
    for sigma in torch.linspace(2, 80, 120):  # the noise level whose PSNR matches the blobs'
        noisy = (o.float() + sigma * torch.randn(o.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)
        if float(psnr_per_image(o, noisy).mean()) <= target:
            break
    assert abs(float(psnr_per_image(o, noisy).mean()) - target) < 1.0
    assert edge_scores(o, noisy)[0].mean() > edge_scores(o, blur)[0].mean() + 0.3


def test_through_the_metric_contract_and_its_checks():
    o = _shapes(8)
    m = Edges()
    m.reset()
    m.update(o, o)
    out = m.compute()
    assert out == {"edge_f1": 1.0, "grad_l1": 0.0} and len(out.per_image["edge_f1"]) == 8
    for bad in ({"threshold": 0}, {"threshold": "x"}, {"tolerance": -1}, {"tolerance": 1.5}):
        with pytest.raises(ConfigError):
            Edges(**bad)
