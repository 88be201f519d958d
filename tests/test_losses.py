"""Each loss against hand-computed values."""
import math

import pytest
import torch
import torch.nn.functional as F

from tokzoo.train import losses as L


def test_reconstruction_losses():
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert L.reconstruction_loss(a, b, "l1").item() == pytest.approx(0.5)
    assert L.reconstruction_loss(a, b, "l2").item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        L.reconstruction_loss(a, b, "l3")


def test_hinge_losses():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1-real) = [0, .5, 2] -> mean 5/6 ; relu(1+fake) = [0, 1, 2] -> mean 1
    assert L.hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert L.hinge_g_loss(fake).item() == pytest.approx(1 / 3)


def test_adaptive_gan_weight_is_ratio_of_gradient_norms():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = (3 * w).sum()  # grad = [3, 3], norm = 3*sqrt(2)
    g = (w ** 2).sum()  # grad = 2w = [2, 4], norm = sqrt(20)
    got = L.adaptive_gan_weight(nll, g, w)
    assert got.item() == pytest.approx(3 * math.sqrt(2) / (math.sqrt(20) + 1e-4), rel=1e-6)
    assert not got.requires_grad
    big = L.adaptive_gan_weight((1e9 * w).sum(), (0 * w).sum() + 1e-12 * w.sum(), w)
    assert big.item() == 1e4  # clamped


def test_codebook_loss():
    z = torch.tensor([[1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 0.0]], requires_grad=True)
    cb, commit = L.codebook_loss(z, q, beta=0.25)
    assert cb.item() == pytest.approx(0.5) and commit.item() == pytest.approx(0.125)


def test_clip_loss_matches_manual():
    torch.manual_seed(0)
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    got = L.clip_contrastive_loss(img, txt, 10.0)
    i, t = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = 10.0 * i @ t.t()
    manual = 0
    for k in range(4):
        manual += -torch.log_softmax(logits[k], 0)[k] / 8 - torch.log_softmax(logits[:, k], 0)[k] / 8
    assert got.item() == pytest.approx(manual.item(), rel=1e-5)


def test_siglip_loss_matches_manual():
    torch.manual_seed(1)
    img, txt = torch.randn(3, 5), torch.randn(3, 5)
    got = L.siglip_loss(img, txt, 10.0, -10.0)
    i, t = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    total = 0.0
    for a in range(3):
        for b in range(3):
            z = 1.0 if a == b else -1.0
            total += -math.log(1 / (1 + math.exp(-z * (10.0 * float(i[a] @ t[b]) - 10.0))))
    assert got.item() == pytest.approx(total / 3, rel=1e-5)


def test_cosine_distill():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert L.cosine_distill_loss(s, t).item() == pytest.approx(0.5)


def test_lpips_loads_from_a_local_file_and_says_which_file_is_missing(tmp_path, monkeypatch):
    import torchvision

    from tokzoo.errors import WeightsNotFoundError

    monkeypatch.setenv("TOKZOO_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError) as err:
        L.load_lpips("alex")
    assert "alexnet-owt-7be5be79.pth" in str(err.value) and str(tmp_path) in str(err.value)
    torch.manual_seed(0)
    net = torchvision.models.alexnet()
    torch.save(net.state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")
    lp = L.load_lpips("alex")
    # the backbone really is the file's weights
    assert torch.equal(lp.inner.net.slice1[0].weight, net.features[0].weight)
    x = torch.rand(2, 3, 32, 32)
    d = lp(x, x)
    assert d.shape == (2,) and d.abs().max() < 1e-6
    assert (lp(x, torch.rand(2, 3, 32, 32)) > 0).all()
