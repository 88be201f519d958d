"""Measures both training and the bench use: PSNR per image, the linear probe,
and the image bootstrap of a number that is not a mean (:func:`resample_counts`,
:func:`resample_interval`; public in :mod:`tokzoo.api` for metric authors).

A leaf below ``tokzoo.train`` and ``tokzoo.bench`` (the trainer's evaluation
and the bench's metrics compute the same numbers, from here).

The linear probe's recipe is fixed (part of the measurement protocol,
``linear-probe`` v2): features computed from the discrete tokens alone
(``token_features(codes)``; v1 let a tokenizer give continuous
pre-quantization features) are pooled to ``[N, C]`` (mean over the token
grid), standardised with the training set's mean and std, and a multinomial logistic regression
with L2 penalty ``1e-4`` is fit by full-batch L-BFGS (100 iterations, float64,
seed 0). Reported: top-1 accuracy on the validation features.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor



def psnr_per_image(originals: Tensor, reconstructions: Tensor) -> Tensor:
    """PSNR of each uint8 image pair ``[B,3,H,W]``, ``data_range=255`` (float64 ``[B]``)."""
    a, b = originals.double(), reconstructions.double()
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse.clamp(min=1e-10))


PROBE_PROTOCOL = {"name": "linear-probe", "version": 2, "features": "token_features(codes): from the tokens alone",
                  "l2": 1e-4, "iterations": 100, "optimizer": "lbfgs"}


def pool(features: Tensor) -> Tensor:
    """``[B,C,h,w]`` or ``[B,N,C]`` or ``[B,C]`` -> ``[B,C]``."""
    if features.dim() == 4:
        return features.float().mean(dim=(2, 3))
    if features.dim() == 3:
        return features.float().mean(dim=1)
    return features.float()


def linear_probe(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, num_classes: int | None = None,
                 l2: float = 1e-4, iterations: int = 100, seed: int = 0, per_image: bool = False) -> float | Tensor:
    """Top-1 accuracy (0..1) of a logistic-regression probe trained on ``train_x``;
    with ``per_image``, each validation image's 0/1 correctness (``[N]``) instead."""
    torch.manual_seed(seed)
    train_x, val_x = train_x.double(), val_x.double()
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    xt, xv = (train_x - mean) / std, (val_x - mean) / std
    k = num_classes or int(max(train_y.max(), val_y.max())) + 1
    w = torch.zeros(xt.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, train_y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xv @ w + b).argmax(1)
    correct = (pred == val_y).double()
    return correct if per_image else float(correct.mean())


# -- the image bootstrap of a number that is not a mean (codebook usage, rFID) ------------
#: the standard normal's 97.5 % quantile
Z95 = 1.959963984540054


def resample_counts(n: int, resamples: int, seed: int = 0, chunk: int = 64):
    """Bootstrap draws of ``n`` images: arrays ``[b, n]`` of how many times each
    image is drawn (``resamples`` in all, ``chunk`` at a time; one seed, so every
    number resampled over the same images uses the same draws)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        draws = rng.integers(0, n, size=(b, n))
        flat = (draws + (np.arange(b) * n)[:, None]).reshape(-1)
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def resample_interval(value: float, resampled) -> tuple[float, float] | None:
    """The normal bootstrap 95 % interval ``value ± 1.96 sd(resampled)``; None
    when fewer than two resampled values are finite."""
    r = np.asarray(resampled, dtype=np.float64).reshape(-1)
    r = r[np.isfinite(r)]
    if len(r) < 2 or not math.isfinite(value):
        return None
    h = Z95 * float(np.std(r, ddof=1))
    return value - h, value + h
