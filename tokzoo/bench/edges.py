"""``edges``: does the reconstruction keep the edges? A blurry tokenizer (flat
blobs of the right mean colour) can tie with a sharp one on PSNR; it cannot
here. On the luminance (BT.601) of the uint8 images, Sobel gradients (3x3,
normalised by 4, replicate padding); an edge is a pixel whose gradient
magnitude is at least ``threshold`` (default 0.1 of the 0-1 range); per image:

- ``edge_f1``: the F1 of the reconstruction's edges against the original's,
  a pixel matching within ``tolerance`` pixels (a 3x3 neighbourhood at 1):
  precision = the reconstruction's edges near an original edge, recall = the
  original's edges near a reconstructed edge; 1 when neither has an edge;
- ``grad_l1``: the mean absolute difference of the two gradient magnitudes.

Means over the images, each with the host's bootstrap interval."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokzoo.api import Metric, MetricResult
from tokzoo.errors import ConfigError

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4


def gradient_magnitude(images: Tensor) -> Tensor:
    """uint8 ``[B,3,H,W]`` -> ``[B,H,W]`` Sobel gradient magnitude of the luminance in [0, 1] units."""
    x = images.float() / 255
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    k = torch.stack([_SOBEL, _SOBEL.t()])[:, None].to(y.device)
    g = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k)
    return g.pow(2).sum(1).sqrt()


def edge_scores(originals: Tensor, reconstructions: Tensor, threshold: float = 0.1,
                tolerance: int = 1) -> tuple[Tensor, Tensor]:
    """(edge F1, gradient L1) per image, float64 ``[B]`` each."""
    go, gr = gradient_magnitude(originals), gradient_magnitude(reconstructions)
    eo, er = go >= threshold, gr >= threshold
    size = 2 * tolerance + 1
    near_o = F.max_pool2d(eo[:, None].float(), size, stride=1, padding=tolerance)[:, 0] > 0
    near_r = F.max_pool2d(er[:, None].float(), size, stride=1, padding=tolerance)[:, 0] > 0
    n_o, n_r = eo.flatten(1).sum(1).double(), er.flatten(1).sum(1).double()
    precision = (er & near_o).flatten(1).sum(1).double() / n_r.clamp(min=1)
    recall = (eo & near_r).flatten(1).sum(1).double() / n_o.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    f1 = torch.where((n_o == 0) & (n_r == 0), torch.ones_like(f1), f1)  # nothing to find, nothing made up
    return f1, (go - gr).abs().flatten(1).mean(1).double()


class Edges(Metric):
    """Edge F1 and gradient error of the reconstructions (see the module docstring)."""

    name = "edges"
    measures_continuous = True  # images only
    better = {"edge_f1": "higher", "grad_l1": "lower"}

    def __init__(self, threshold: float = 0.1, tolerance: int = 1):
        """threshold: the gradient magnitude (0-1 luminance units) from which a pixel is an edge;
        tolerance: how many pixels apart an edge still matches."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 2:
            raise ConfigError(f"edges: threshold must be a number in (0, 2), not {threshold!r:.40}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 0 <= tolerance <= 8:
            raise ConfigError(f"edges: tolerance must be a whole number of pixels 0..8, not {tolerance!r:.40}")
        self.threshold, self.tolerance = float(threshold), tolerance
        for key in ("f1", "l1", "n"):
            self.add_state(key, torch.zeros((), dtype=torch.float64), "sum")
        for key in ("edge_f1", "grad_l1"):  # per image, for the bootstrap
            self.add_state(key, torch.zeros(0, dtype=torch.float64), "cat")

    def protocol(self):
        return {"threshold": self.threshold, "tolerance": self.tolerance, "gradient": "Sobel/4 on BT.601 luma"}

    def update(self, originals, reconstructions, codes=None, batch=None) -> None:
        f1, l1 = edge_scores(originals, reconstructions, self.threshold, self.tolerance)
        f1, l1 = f1.double(), l1.double()
        self.state["f1"] += f1.sum()
        self.state["l1"] += l1.sum()
        self.state["n"] += len(f1)
        self.state["edge_f1"].append(f1)
        self.state["grad_l1"].append(l1)

    def compute(self) -> MetricResult:
        n = float(self.state["n"])
        if n == 0:
            raise ValueError("edges: no image was measured")
        return MetricResult(values={"edge_f1": float(self.state["f1"]) / n, "grad_l1": float(self.state["l1"]) / n},
                            per_image={k: self.cat_state(k) for k in ("edge_f1", "grad_l1")})
