"""Reusable losses: reconstruction, LPIPS, PatchGAN + hinge + adaptive weight,
codebook terms, contrastive (CLIP softmax, SigLIP sigmoid), cosine distillation.

Images are ``[B,3,H,W]`` in ``[0,1]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.nn.perceptual import load_lpips  # noqa: F401 (public here: L.load_lpips)


def reconstruction_loss(recon: Tensor, target: Tensor, kind: str = "l1") -> Tensor:
    """Mean absolute (``l1``) or squared (``l2``) error."""
    if kind == "l1":
        return (recon - target).abs().mean()
    if kind == "l2":
        return F.mse_loss(recon, target)
    raise ValueError(f"reconstruction loss must be 'l1' or 'l2', not {kind!r}")


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming): images in ``[0,1]`` -> logits ``[B,1,h,w]``."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                    nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        seq.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*seq)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images * 2 - 1)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss: 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator adversarial loss: -E[D(G(z))]."""
    return -logits_fake.mean()


def adaptive_gan_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN's balance: ||grad nll|| / (||grad g|| + 1e-4) at the decoder's last layer, clamped."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    return torch.clamp(w, 0.0, max_weight).detach()


def codebook_loss(z: Tensor, q: Tensor, beta: float = 0.25) -> tuple[Tensor, Tensor]:
    """(``||sg(z) - q||^2``, ``beta * ||z - sg(q)||^2``)."""
    return F.mse_loss(q, z.detach()), beta * F.mse_loss(z, q.detach())


def clip_contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric softmax cross-entropy over the batch (CLIP). Embeddings ``[B,D]``."""
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = logit_scale * image_emb @ text_emb.t()
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def siglip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float) -> Tensor:
    """Pairwise sigmoid loss (SigLIP): -mean over images of sum_j log sigmoid(z_ij * (t x_i.y_j + b)),
    with z = +1 on the diagonal and -1 elsewhere."""
    image_emb, text_emb = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = logit_scale * image_emb @ text_emb.t() + logit_bias
    signs = 2 * torch.eye(len(logits), device=logits.device) - 1
    return -F.logsigmoid(signs * logits).sum() / len(logits)


def cosine_distill_loss(student: Tensor, teacher: Tensor, dim: int = 1) -> Tensor:
    """Mean of ``1 - cos(student, teacher)`` along ``dim`` (teacher detached)."""
    return (1 - F.cosine_similarity(student, teacher.detach(), dim=dim)).mean()
