"""Perceptual networks loaded from local files: LPIPS for the loss and the metric."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tokzoo.weights import KNOWN_FILES, find_weights


def load_lpips(net: str = "alex", weights_dir=None) -> nn.Module:
    """The LPIPS metric/loss with its backbone loaded from a local torchvision file.

    The linear calibration layers ship inside the ``lpips`` package; the
    backbone (AlexNet or VGG16) comes from ``alexnet-owt-7be5be79.pth`` /
    ``vgg16-397923af.pth`` in the weight folders (:mod:`tokzoo.weights`).
    Takes images in ``[0,1]``; returns ``[B]`` distances.
    """
    import lpips
    import torchvision

    key = {"alex": "alexnet", "vgg": "vgg16"}[net]
    path = find_weights(KNOWN_FILES[key], f"LPIPS ({net})", weights_dir)
    import warnings

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`; the backbone is ours
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    backbone = getattr(torchvision.models, key)()
    from tokzoo.errors import WeightsNotFoundError

    try:
        backbone.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:
        raise WeightsNotFoundError(f"{path} is not a torchvision {key} state dict ({str(exc).splitlines()[0]})") from None
    features = backbone.features
    for slice_ in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
        for idx, module in slice_.named_children():
            module.load_state_dict(features[int(idx)].state_dict())
    model.eval().requires_grad_(False)
    return _LPIPS01(model)


class _LPIPS01(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.inner(a * 2 - 1, b * 2 - 1).flatten()
